using FireSharp.Devices.Virtio.Net;
using FireSharp.Kvm.Files;
using FireSharp.Kvm.Interop;
using FireSharp.Proto.Worker;
using FireSharp.Snapshot;
using Microsoft.Win32.SafeHandles;

namespace FireSharp.Worker;

/// <summary>
/// The worker's two jail stages (docs/isolation.md). A .NET process is multi-threaded from its first instruction,
/// and unshare(2) moves only the calling thread (CLONE_NEWPID only its children), so the namespaces are made by
/// util-linux unshare(1) before this runtime starts again:
/// <list type="number">
/// <item><c>--jail PLAN</c> (<see cref="Prepare"/>, root, host namespaces): builds the jail's skeleton, opens the
///   VM's drives, joins a given network namespace, attaches the VM's taps there, points stdio at the log, marks
///   every other fd close-on-exec and execve()s <c>unshare --fork --pid --mount --ipc --uts [--net] --kill-child -- firesharp-vmm --jailed ...</c>.</item>
/// <item><c>--jailed PLAN</c> (<see cref="Enter"/>, root, new namespaces, the VM's pid 1): bind-mounts what the VM
///   uses at the same paths, makes <c>/dev</c>, pivot_roots into the jail, sets rlimits and drops every privilege,
///   registers the drives and taps handed over; then the ordinary worker runs.</item>
/// </list>
/// </summary>
internal static class Jailer
{
    /// <summary>
    /// Stage 1: opens what the worker is handed (drives and kernel/initrd through the daemon's path policy, the
    /// verified snapshot files, the taps) and execs stage 2 with their fds after the ready pipe, in the order
    /// <see cref="JailFdLayout"/> states.
    /// </summary>
    public static int Prepare(WorkerArgs args)
    {
        var plan = ReadPlan(args.Jail!);
        BuildSkeleton(plan);
        var keep = new List<SafeFileHandle>();
        // The daemon's path policy: the fd handed over is the one that was checked (no second open by path).
        var policy = plan.AllowedPathRoots.Count > 0 ? new PathPolicy(plan.AllowedPathRoots, plan.AllowBlockDevices) : null;
        int drives = plan.Files.Count;
        var driveFds = new int[drives];
        for (int i = 0; i < drives; i++)
        {
            var f = plan.Files[i];
            try
            {
                var h = policy is not null ? policy.Open(f.Path, PathKind.Drive, writable: !f.ReadOnly)
                    : File.OpenHandle(f.Path, FileMode.Open, f.ReadOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite);
                keep.Add(h);
                driveFds[i] = (int)h.DangerousGetHandle();
            }
            catch (PathPolicyException e)
            {
                // Refused: nothing is handed over, and the jailed worker cannot reach the path itself (it is not in its root).
                Console.Error.WriteLine($"jail: drive {f.Path} refused: {e.Message}");
                driveFds[i] = -1;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                driveFds[i] = -1; // the worker then reports the drive by path, as an unjailed one would
            }
        }
        // The verified snapshot files follow the drives, as plan entries of their own (OpenSnapshot adds them), so
        // stage 2 finds them among the files. From here the plan is final, and so is the fd layout.
        var snapshot = OpenSnapshot(plan, args.Jail!);
        var layout = JailFdLayout.Of(plan);
        var fds = layout.NewList();
        for (int i = 0; i < drives; i++) fds[layout.File(i)] = driveFds[i];
        for (int k = 0; k < snapshot.Count; k++)
        {
            keep.Add(snapshot[k].Handle);
            fds[layout.File(drives + k)] = (int)snapshot[k].Handle.DangerousGetHandle();
        }
        // The kernel and initrd: bound into the jail from these fds (Enter), never by path.
        int j = 0;
        foreach (var m in plan.Mounts.Where(m => m.ByFd))
        {
            try
            {
                var h = policy is not null ? policy.Open(m.Path, PathKind.File) : File.OpenHandle(m.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                keep.Add(h);
                fds[layout.ByFdMount(j)] = (int)h.DangerousGetHandle();
            }
            catch (Exception e) when (e is PathPolicyException or IOException or UnauthorizedAccessException)
            {
                // not mounted (stays -1): the worker reports the kernel missing, by path
            }
            j++;
        }
        ProcInfo.NewSession();
        var ready = ProcInfo.DuplicateStdout();
        if (args.Log is not null) ProcInfo.RedirectStdio(args.Log);
        if (plan.NetnsPath.Length > 0)
        {
            using var ns = File.OpenHandle(plan.NetnsPath, FileMode.Open, FileAccess.Read);
            // This (the main) thread is the one that execve()s: the new process starts in that namespace.
            Exec.EnterNamespace((int)ns.DangerousGetHandle(), Exec.CLONE_NEWNET, plan.NetnsPath);
        }
        var tapErrors = OpenTaps(plan, layout, keep, fds);
        Exec.CloseAllOnExec(3);
        int readyFd = ready is null ? -1 : (int)ready.DangerousGetHandle();
        if (readyFd >= 0) Exec.KeepAcrossExec(readyFd);
        foreach (int fd in fds.Where(fd => fd >= 0)) Exec.KeepAcrossExec(fd);
        var argv = JailCommand.UnshareArgv(plan, Environment.ProcessPath ?? "/proc/self/exe", args, readyFd, fds, tapErrors);
        Exec.Execve(plan.UnsharePath, argv, []);
        GC.KeepAlive(keep);
        return 1; // not reached: Execve throws when it fails
    }

    /// <summary>
    /// Stage 1: attaches the VM's taps on this (the main, execve()ing) thread, after it joined the plan's network
    /// namespace, so they belong to that one (or the daemon's), before unshare gives the worker an empty one. A tap
    /// that fails is fd -1 and its error goes to the worker (<see cref="TapError"/>), which reports it as an
    /// unjailed worker would.
    /// </summary>
    private static List<TapError> OpenTaps(JailPlan plan, JailFdLayout layout, List<SafeFileHandle> keep, int[] fds)
    {
        var errors = new List<TapError>();
        for (int i = 0; i < plan.Taps.Count; i++)
        {
            try
            {
                var h = TapBackend.OpenForJail(TapName(plan.Taps[i]));
                keep.Add(h);
                fds[layout.Tap(i)] = (int)h.DangerousGetHandle();
            }
            catch (NetConfigException e)
            {
                errors.Add(new TapError(i, e.Reason, e.Message));
            }
        }
        return errors;
    }

    private static string? TapName(JailTap tap) => tap.Name.Length == 0 ? null : tap.Name;

    /// <summary>Stage 2: jails this process (see the class remarks); returns the ready pipe, if any.</summary>
    public static SafeFileHandle? Enter(WorkerArgs args)
    {
        var plan = ReadPlan(args.Jailed!);
        string root = plan.Root;
        Mounts.MakeAllPrivate();
        Mounts.Mount(root, root, null, Mounts.MS_BIND | Mounts.MS_REC); // pivot_root needs a mount point
        var fds = args.Fds;
        var layout = JailFdLayout.Of(plan);
        int byFd = 0;
        foreach (var m in plan.Mounts)
        {
            ulong flags = Mounts.MS_NOSUID | Mounts.MS_NODEV | Mounts.MS_NOEXEC | (m.Writable ? 0 : Mounts.MS_RDONLY);
            if (m.ByFd)
            {
                int fd = JailFdLayout.At(fds, layout.ByFdMount(byFd++));
                if (fd < 0) continue; // refused or missing: the worker reports it, by path
                using var file = new SafeFileHandle(fd, ownsHandle: true);
                BindChecked(file, Inside(root, m.Path), flags);
                continue;
            }
            if (!Path.Exists(m.Path)) continue; // the worker reports what is missing, by path
            Mounts.Bind(m.Path, Inside(root, m.Path), flags);
        }
        string dev = Path.Combine(root, "dev");
        Mounts.Mount("tmpfs", dev, "tmpfs", Mounts.MS_NOSUID | Mounts.MS_NOEXEC, "mode=0755,size=64k,nr_inodes=16");
        Mounts.MakeCharDevice(Path.Combine(dev, "kvm"), 10, 232, 0b110_000_000, plan.Uid, plan.Gid);
        Mounts.MakeCharDevice(Path.Combine(dev, "urandom"), 1, 9, 0b110_110_110, 0, 0);
        // Host facts the VMM reads from /sys, latched while the host's tree is still in view.
        _ = FireSharp.Kvm.KvmSystem.IsPvmHost;
        // libseccomp is loaded from the host's /usr/lib now: after the pivot the worker installs its filter from it.
        // OpenSSL too, for an interface's derived MAC (SHA-256, NetworkInterfaceSpec.DeriveMac): the jail has no libssl.
        if (plan.Taps.Count > 0) _ = System.Security.Cryptography.SHA256.HashData(ReadOnlySpan<byte>.Empty);
        if (args.Seccomp && !Seccomp.IsAvailable()) throw new JailSetupException("libseccomp.so.2 cannot be loaded (install the Debian package libseccomp2)");
        Mounts.ChangeDirectory(root);
        Mounts.PivotRoot(".", ".");
        Mounts.Unmount(".", Mounts.MNT_DETACH); // the host's root, stacked under the jail's
        Mounts.ChangeDirectory("/");
        Mounts.Mount(null, "/", null, Mounts.MS_REMOUNT | Mounts.MS_BIND | Mounts.MS_RDONLY | Mounts.MS_NOSUID | Mounts.MS_NODEV);
        Mounts.SetHostname("firesharp");

        Privileges.SetLimit(Privileges.RLIMIT_CORE, 0);
        Privileges.SetLimit(Privileges.RLIMIT_NOFILE, plan.OpenFilesLimit);
        Privileges.SetLimit(Privileges.RLIMIT_FSIZE, plan.FileSizeLimit);
        Privileges.DropBoundingSet(); // needs CAP_SETPCAP: before the uid changes
        Privileges.BecomeUser(plan.Uid, plan.Gid);
        Privileges.ClearCapabilities();
        Privileges.SetNoNewPrivileges();

        for (int i = 0; i < plan.Files.Count; i++)
            if (JailFdLayout.At(fds, layout.File(i)) is var f and >= 0) PreopenedFiles.Add(plan.Files[i].Path, plan.Files[i].ReadOnly, new SafeFileHandle(f, ownsHandle: true));
        for (int i = 0; i < plan.Taps.Count; i++)
        {
            string? name = TapName(plan.Taps[i]);
            if (JailFdLayout.At(fds, layout.Tap(i)) is var k and >= 0) PreopenedTaps.Add(name, new SafeFileHandle(k, ownsHandle: true));
            else if (args.TapErrors.FirstOrDefault(e => e.Index == i) is { } e) PreopenedTaps.AddFailure(name, e.Reason, e.Message);
            else PreopenedTaps.AddFailure(name, NetConfigError.TapUnusable, "the jailer did not hand over this tap");
        }
        return args.ReadyFd is int r and >= 0 ? new SafeFileHandle(r, ownsHandle: true) : null;
    }

    /// <summary>
    /// Bind-mounts the file stage 1 opened through the path policy. mount(2) cannot take it from the fd (the fd's
    /// mount belongs to the host's mount namespace, and a bind source must be in the caller's: EINVAL), so the file
    /// is bound by the path its fd has now, and the mount is then checked to be that very inode (device and inode
    /// number): a path swapped in between is caught, not mounted.
    /// </summary>
    private static void BindChecked(SafeFileHandle file, string target, ulong flags)
    {
        string self = "/proc/self/fd/" + ((int)file.DangerousGetHandle()).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string source = new FileInfo(self).LinkTarget ?? throw new JailSetupException($"{self} names no file");
        var want = PathOpen.Status(file);
        Mounts.Bind(source, target, flags);
        using var mounted = PathOpen.Open(target, PathOpen.OPath | PathOpen.ONoFollow, out int errno);
        if (mounted.IsInvalid) throw new JailSetupException($"open({target})", errno);
        var got = PathOpen.Status(mounted);
        if (got.Device != want.Device || got.Inode != want.Inode)
            throw new JailSetupException($"{source} changed between the path policy's check and its bind mount into the jail; refused");
    }

    /// <summary>
    /// Stage 1 of a restore (root, host view, no guest code yet): opens the snapshot chain's files and verifies them
    /// with the daemon's keys from the plan (<see cref="SnapshotFiles.OpenVerifiedChain"/>; a refusal is a
    /// <see cref="SnapshotException"/>, reported to the daemon on the ready pipe). Then rewrites the plan file for
    /// stage 2 without the keys and with one read-only <see cref="JailFile"/> per verified file, in the order the fds
    /// follow the drives': the jailed worker gets the files it is to read already open, and no key.
    /// </summary>
    private static List<OpenedSnapshotFile> OpenSnapshot(JailPlan plan, string planPath)
    {
        if (plan.SnapshotDir.Length == 0) return [];
        SnapshotKeys keys;
        try
        {
            keys = new SnapshotKeys(plan.SnapshotKeys.Select(k => new FireSharp.Snapshot.SnapshotKey(k.Id, k.Key.ToByteArray())));
        }
        catch (ArgumentException e)
        {
            throw new SnapshotException(SnapshotErrorReason.Unauthenticated, $"cannot restore {plan.SnapshotDir}: the jail plan has no usable snapshot key: {e.Message}", e);
        }
        var files = SnapshotFiles.OpenVerifiedChain(plan.SnapshotDir, keys);
        try
        {
            plan.SnapshotKeys.Clear();
            foreach (var f in files) plan.Files.Add(new JailFile { Path = f.Path, ReadOnly = true });
            WritePlan(planPath, plan);
            return files;
        }
        catch
        {
            foreach (var f in files) f.Handle.Dispose();
            throw;
        }
    }

    /// <summary>Replaces the plan file (root, 0600, outside the jail's root) atomically.</summary>
    private static void WritePlan(string path, JailPlan plan)
    {
        string temp = path + ".stage1";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var stream = new FileStream(temp, options))
        {
            Google.Protobuf.MessageExtensions.WriteTo(plan, stream);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Stage 1 (root, host view): the root directory and an empty mount point for every bind mount.</summary>
    internal static void BuildSkeleton(JailPlan plan)
    {
        Directory.CreateDirectory(plan.Root);
        Directory.CreateDirectory(Path.Combine(plan.Root, "dev"));
        foreach (var m in plan.Mounts)
        {
            string target = Inside(plan.Root, m.Path);
            if (m.Directory)
            {
                Directory.CreateDirectory(target);
                continue;
            }
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (!File.Exists(target)) File.WriteAllBytes(target, []);
        }
    }

    /// <summary>Where host path <paramref name="path"/> appears under the jail's root before the pivot.</summary>
    internal static string Inside(string root, string path) => Path.Join(root, Path.GetFullPath(path));

    private static JailPlan ReadPlan(string path) => JailPlan.Parser.ParseFrom(File.ReadAllBytes(path));
}

/// <summary>The command lines of the jail's stages (pure, so unit tests cover them).</summary>
public static class JailCommand
{
    /// <summary>
    /// unshare(1)'s argv for stage 2: new pid, mount, ipc and uts namespaces (and a new net namespace unless the plan
    /// names one, which stage 1 has joined already); the worker is forked into them as their pid 1 and killed if
    /// unshare dies. The environment is not passed on (execve gets an empty one).
    /// </summary>
    public static List<string> UnshareArgv(JailPlan plan, string self, WorkerArgs args, int readyFd, IReadOnlyList<int> fds, IReadOnlyList<TapError>? tapErrors = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(args);
        var argv = new List<string> { "unshare", "--fork", "--kill-child", "--pid", "--mount", "--ipc", "--uts", "--propagation", "private" };
        if (plan.NetnsPath.Length == 0) argv.Add("--net");
        argv.AddRange(["--", self, "--jailed", args.Jail!, "--socket", args.Socket!]);
        if (args.Id is not null) argv.AddRange(["--id", args.Id]);
        argv.AddRange(["--log-level", args.Level.ToString()]);
        if (args.Seccomp) argv.Add("--seccomp");
        if (args.SeccompTestTrigger is not null) argv.AddRange(["--seccomp-test-trigger", args.SeccompTestTrigger]);
        if (readyFd >= 0) argv.AddRange(["--ready-fd", readyFd.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        if (fds.Count > 0) argv.AddRange(["--fds", string.Join(',', fds.Select(f => f.ToString(System.Globalization.CultureInfo.InvariantCulture)))]);
        if (tapErrors is { Count: > 0 }) argv.AddRange(["--tap-errors", TapError.Format(tapErrors)]);
        return argv;
    }
}

/// <summary>A tap the jailer could not open: its index in <see cref="JailPlan.Taps"/>, why, and the message (one argv entry per list).</summary>
public sealed record TapError(int Index, NetConfigError Reason, string Message)
{
    /// <summary>One <c>--tap-errors</c> value: <c>INDEX:REASON:MESSAGE</c> lines.</summary>
    public static string Format(IEnumerable<TapError> errors) =>
        string.Join('\n', errors.Select(e => string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{e.Index}:{e.Reason}:{e.Message.ReplaceLineEndings(" ")}")));

    /// <summary>The errors in a <c>--tap-errors</c> value, or null when it does not parse.</summary>
    public static List<TapError>? Parse(string value)
    {
        var errors = new List<TapError>();
        foreach (var line in value.Split('\n'))
        {
            var parts = line.Split(':', 3);
            if (parts.Length != 3
                || !int.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index)
                || !Enum.TryParse(parts[1], out NetConfigError reason) || !Enum.IsDefined(reason))
                return null;
            errors.Add(new TapError(index, reason, parts[2]));
        }
        return errors;
    }
}
