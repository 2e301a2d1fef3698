using System.CommandLine;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp completion bash|zsh</c>: prints a shell completion script. The script asks the binary itself
/// through System.CommandLine's <c>[suggest:POSITION]</c> directive (<c>firesharp "[suggest:9]" "firesharp v"</c>
/// prints one completion a line), so commands, options and option values (<c>-o json</c>, <c>--state running</c>)
/// complete as this binary defines them. Install: <c>firesharp completion bash &gt; /etc/bash_completion.d/firesharp</c>,
/// or <c>source &lt;(firesharp completion bash)</c>; zsh: <c>firesharp completion zsh &gt; "${fpath[1]}/_firesharp"</c>.
/// </summary>
internal static class CompletionCommand
{
    public const string Bash = """
        # bash completion for firesharp (firesharp completion bash)
        _firesharp_complete() {
            local line="${COMP_LINE:0:$COMP_POINT}"
            local IFS=$'\n'
            local word="${COMP_WORDS[COMP_CWORD]}"
            COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "[suggest:${#line}]" "$line" 2>/dev/null)" -- "$word"))
        }
        complete -o default -F _firesharp_complete firesharp
        """;

    public const string Zsh = """
        #compdef firesharp
        # zsh completion for firesharp (firesharp completion zsh)
        _firesharp() {
            local line="${(j: :)words[1,CURRENT]}"
            local -a completions
            completions=("${(@f)$("${words[1]}" "[suggest:${#line}]" "$line" 2>/dev/null)}")
            compadd -- "${completions[@]}"
        }
        if [[ "${funcstack[1]}" = _firesharp ]]; then
            _firesharp "$@"
        else
            compdef _firesharp firesharp
        fi
        """;

    public static Command Create()
    {
        var shell = new Argument<string>("shell") { Description = "bash or zsh" };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        var command = new Command("completion", "print a shell completion script (bash, zsh): source <(firesharp completion bash)") { shell };
        command.SetAction(parse =>
        {
            Console.Out.Write(parse.GetValue(shell) == "zsh" ? Zsh : Bash);
            Console.Out.Write('\n');
            return ExitCodes.Ok;
        });
        return command;
    }
}
