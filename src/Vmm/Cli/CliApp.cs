namespace FireSharp.Cli;

public static class CliApp
{
    public static int Run(string[] args) => 0;
}
