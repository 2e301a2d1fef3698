using FireSharp.Fuzz;
using SharpFuzz;

// FireSharp.Fuzz: one binary for every fuzz target.
//   FireSharp.Fuzz list                      the targets
//   FireSharp.Fuzz <target>                  run under afl-fuzz (SharpFuzz's fork-server protocol; the input on stdin)
//   FireSharp.Fuzz run <target> <file>...    run files once, outside AFL (a crash shows its exception)
//   FireSharp.Fuzz seed <dir>                write the seed corpus, <dir>/<target>/<name>
// A typed rejection (the code under test's own exception for bad input) is a success; any other exception
// escapes to SharpFuzz, which reports it to AFL as a crash.

if (args.Length == 0)
{
    Console.Error.WriteLine("usage: FireSharp.Fuzz list | <target> | run <target> <file>... | seed <dir>");
    return 2;
}
switch (args[0])
{
    case "list":
        foreach (var t in FuzzTargets.All) Console.WriteLine($"{t.Name,-16} {t.Description}");
        return 0;
    case "seed" when args.Length == 2:
        foreach (var (target, name, bytes) in Seeds.All())
        {
            var dir = Path.Combine(args[1], target);
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, name), bytes);
        }
        return 0;
    case "run" when args.Length >= 3:
    {
        var target = FuzzTargets.Get(args[1]);
        foreach (var file in args.Skip(2))
            Console.WriteLine($"{file}: {(target.Run(File.ReadAllBytes(file)) is { } e ? "rejected: " + e.Message : "accepted")}");
        return 0;
    }
    default:
    {
        var target = FuzzTargets.Get(args[0]);
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            target.Run(buffer.ToArray());
        });
        return 0;
    }
}
