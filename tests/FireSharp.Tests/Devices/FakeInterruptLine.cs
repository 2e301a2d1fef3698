using FireSharp.Devices;

namespace FireSharp.Tests.Devices;

/// <summary>Records what a device does to its interrupt line.</summary>
internal sealed class FakeInterruptLine : IInterruptLine
{
    private readonly object _gate = new();
    private readonly List<bool> _levels = [];
    private int _pulses;
    private bool _level;

    /// <summary>Every SetLevel call, in order.</summary>
    public IReadOnlyList<bool> Levels
    {
        get { lock (_gate) { return _levels.ToArray(); } }
    }

    public bool Level
    {
        get { lock (_gate) { return _level; } }
    }

    public int Pulses
    {
        get { lock (_gate) { return _pulses; } }
    }

    public void SetLevel(bool high)
    {
        lock (_gate)
        {
            _levels.Add(high);
            _level = high;
        }
    }

    public void Pulse()
    {
        lock (_gate)
        {
            _pulses++;
        }
    }
}
