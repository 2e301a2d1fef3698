using System.CommandLine;
using System.Globalization;
using FireSharp.Proto.V1;
using FireSharp.Cli.Args;
using FireSharp.Cli.Output;

namespace FireSharp.Cli;

/// <summary>
/// <c>firesharp snapshot create|restore</c>: snapshots through the daemon (CreateSnapshot and RestoreVm), with
/// the same connection options, output and exit codes as <c>firesharp vm</c>. Paths are made absolute here
/// and are paths on the daemon's host.
/// </summary>
internal static class SnapshotCommands
{
    public static Command Create()
    {
        var snapshot = new Command("snapshot", "snapshot VMs and restore snapshots as new VMs through the FireSharp daemon");
        foreach (var o in DaemonClient.All) snapshot.Options.Add(o);
        snapshot.Subcommands.Add(CreateCommand());
        snapshot.Subcommands.Add(RestoreCommand());
        snapshot.Subcommands.Add(SnapshotBenchCommand.Create());
        return snapshot;
    }

    private static Command CreateCommand()
    {
        var id = new Argument<string>("vm-id") { Description = "the VM to snapshot (running or paused)" };
        var dir = new Argument<string>("dir") { Description = "the snapshot directory to create (must not exist)" };
        var resume = new Option<bool>("--resume") { Description = "resume the VM afterwards (otherwise it stays paused)" };
        var diff = new Option<bool>("--diff") { Description = "write only the pages dirtied since this VM's previous snapshot (its base, which must stay in place); needs --track-dirty on an earlier snapshot" };
        var trackDirty = new Option<bool>("--track-dirty") { Description = "start tracking dirty pages at this snapshot, so later ones can be --diff" };
        var command = new Command("create", "snapshot a VM into a new directory") { id, dir, resume, diff, trackDirty };
        command.SetAction((parse, ct) => VmClientCommands.CallAsync(parse, async (client, options) =>
        {
            var request = new CreateSnapshotRequest { Id = parse.GetValue(id)!, Dir = Path.GetFullPath(parse.GetValue(dir)!), Resume = parse.GetValue(resume), Diff = parse.GetValue(diff), TrackDirty = parse.GetValue(trackDirty) };
            var info = await client.CreateSnapshotAsync(request, options);
            string text = string.Format(CultureInfo.InvariantCulture,
                "snapshot {0}: {1} MiB of memory ({2} MiB written), state {3} bytes, {4:F1} ms (vCPUs paused {5:F1} ms); VM {6} is {7}",
                info.Dir, info.MemoryBytes / (1024 * 1024), info.MemoryBytesWritten / (1024 * 1024), info.StateFileBytes,
                info.DurationMs, info.PausedMs, info.Vm?.Id, info.Vm is { } vm ? VmClientCommands.Name(vm.State) : "?");
            if (info.BaseDir.Length > 0)
                text += string.Format(CultureInfo.InvariantCulture, "\ndiff of {0}: {1} pages", info.BaseDir, info.DiffPages);
            Printer.For(parse).Message(info, info.Dir, text);
        }, ct));
        return command;
    }

    private static Command RestoreCommand()
    {
        var dir = new Argument<string>("dir") { Description = "a snapshot directory" };
        var id = new Option<string?>("--id") { Description = "the new VM's id (default: the directory's name plus a random suffix)" };
        var drives = new Option<string[]>("--drive") { Description = "use this image for the snapshot's drive ID: id=ID,path=PATH (the --drive grammar; repeatable)", HelpName = "DRIVE" };
        var vsock = new Option<string?>("--vsock-path") { Description = "this VM's vsock Unix socket path" };
        var labels = new Option<string[]>("--label") { Description = "a label key=value (repeatable)" };
        var paused = new Option<bool>("--paused") { Description = "leave the restored VM paused" };
        var command = new Command("restore", "restore a snapshot as a new VM") { dir, id, drives, vsock, labels, paused, Waiting.Wait };
        command.SetAction((parse, ct) => VmClientCommands.CallAsync(parse, async (client, options) =>
        {
            string path = Path.GetFullPath(parse.GetValue(dir)!);
            var request = new RestoreVmRequest
            {
                Dir = path,
                Id = parse.GetValue(id) ?? DefaultId(path),
                Paused = parse.GetValue(paused),
                Overrides = new RestoreOverrides { VsockPath = parse.GetValue(vsock) is { } v ? Path.GetFullPath(v) : "" },
            };
            foreach (var text in parse.GetValue(drives) ?? [])
            {
                var d = DriveArg.Parse(text).Only("--drive", "snapshot restore", serial: false, flags: false, rates: false, needsId: true);
                request.Overrides.DrivePaths[d.Id!] = Path.GetFullPath(d.Path!);
            }
            foreach (var l in parse.GetValue(labels) ?? [])
            {
                int eq = l.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0) throw new UsageException($"--label {l}: expected key=value", "--label KEY=VALUE");
                request.Labels[l[..eq]] = l[(eq + 1)..];
            }
            VmClientCommands.PrintVm(parse, await Waiting.CallAsync(parse, client, options, request.Id, exists: false, restored: true, o => client.RestoreVmAsync(request, o).ResponseAsync));
        }, ct));
        return command;
    }

    /// <summary>An id from the snapshot directory's name (lowercased, other characters as '-') and a random suffix.</summary>
    private static string DefaultId(string dir)
    {
        var name = new string([.. Path.GetFileName(dir.TrimEnd('/')).ToLowerInvariant()
            .Select(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_' or '.' or '-' ? c : '-')]).Trim('-', '.', '_');
        if (name.Length > 40) name = name[..40];
        string suffix = Convert.ToHexStringLower(BitConverter.GetBytes(Random.Shared.Next()))[..6];
        return name.Length == 0 ? $"restored-{suffix}" : $"{name}-{suffix}";
    }
}
