namespace FireSharp.Tests;
public class SmokeTests { [Fact] public void Runs() => Assert.Equal(0, FireSharp.Cli.CliApp.Run([])); }
