using FireSharp.Proto.V1;

namespace FireSharp.Daemon.Functions;

/// <summary>
/// The daemon's function records (each spec as stored), behind an asynchronous lock: one registry change at a
/// time, and a caller that has to wait for the lock waits without holding a thread. The records are reachable
/// only through the <see cref="Access"/> that <see cref="LockAsync"/> returns, so nothing reads them unlocked.
/// A DI singleton: the container disposes it after the function manager that uses it.
/// </summary>
public sealed class FunctionRecords : IDisposable
{
    private readonly Dictionary<string, Function> _records = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>Takes the lock (asynchronously); disposing the result releases it.</summary>
    public async Task<Access> LockAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        return new Access(this);
    }

    public void Dispose() => _gate.Dispose();

    /// <summary>The records while the lock is held.</summary>
    public sealed class Access : IDisposable
    {
        private readonly FunctionRecords _owner;
        private bool _released;

        internal Access(FunctionRecords owner) => _owner = owner;

        private Dictionary<string, Function> Records
        {
            get
            {
                ObjectDisposedException.ThrowIf(_released, this);
                return _owner._records;
            }
        }

        public bool Contains(string name) => Records.ContainsKey(name);

        /// <summary>The stored record (not a copy: change it only while the lock is held).</summary>
        public Function? Find(string name) => Records.GetValueOrDefault(name);

        public void Set(Function record) => Records[record.Spec.Name] = record;

        public bool Remove(string name) => Records.Remove(name);

        /// <summary>Copies of every record.</summary>
        public List<Function> CloneAll() => [.. Records.Values.Select(r => r.Clone())];

        public void Dispose()
        {
            if (_released) return;
            _released = true;
            _owner._gate.Release();
        }
    }
}
