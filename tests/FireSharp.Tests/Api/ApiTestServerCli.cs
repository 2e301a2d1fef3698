using FireSharp.Cli;

namespace FireSharp.Tests.Api;

internal static class ApiTestServerCli
{
    /// <summary>Runs the command line in-process against this daemon (its --socket); returns the exit code and what went to stderr.</summary>
    public static (int Code, string Stderr) RunCli(this ApiTestServer s, params string[] args)
    {
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try
        {
            return (CliApp.Run([.. args, "--socket", s.Options.Socket]), err.ToString());
        }
        finally
        {
            Console.SetError(saved);
        }
    }
}
