using System.Buffers.Binary;
using FireSharp.Devices;
using FireSharp.Devices.Virtio;
using FireSharp.Memory;
using Microsoft.Extensions.Logging;

namespace FireSharp.Fuzz;

/// <summary>
/// Records what a device logs. An entry at Error level or above means the device itself failed (an exception
/// in its queue processing or its event loop): the target reports that as a crash.
/// </summary>
internal sealed class FuzzLogger : ILogger
{
    private readonly List<string> _errors = [];

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (logLevel < LogLevel.Error) return;
        lock (_errors) _errors.Add($"event {eventId.Id}: {formatter(state, exception)} {exception}");
    }

    public void ThrowIfFailed()
    {
        lock (_errors)
        {
            if (_errors.Count > 0) throw new FuzzFailureException(string.Join(Environment.NewLine, _errors));
        }
    }
}

internal sealed class NullInterruptLine : IInterruptLine
{
    public void SetLevel(bool high) { }

    public void Pulse() { }
}

/// <summary>Drives a transport's registers as a virtio-mmio driver's probe does, with the queues of a <see cref="QueueImage"/>.</summary>
internal static class FuzzMmio
{
    public static void W32(IBusDevice device, uint offset, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        device.Write(offset, b);
    }

    /// <summary>The init sequence (virtio 1.x, 3.1.1): features, every queue at the image's addresses, DRIVER_OK.</summary>
    public static void Bringup(VirtioMmioTransport t, QueueImage image, int queueCount)
    {
        const uint Ack = VirtioStatus.Acknowledge, Drv = VirtioStatus.Driver, FeaturesOk = VirtioStatus.FeaturesOk;
        ulong features = image.DriverFeatures | (t.OfferedFeatures & ~VirtioFeatures.Transport);
        W32(t, VirtioMmioRegister.Status, 0);
        W32(t, VirtioMmioRegister.Status, Ack);
        W32(t, VirtioMmioRegister.Status, Ack | Drv);
        W32(t, VirtioMmioRegister.DriverFeaturesSel, 0);
        W32(t, VirtioMmioRegister.DriverFeatures, (uint)features);
        W32(t, VirtioMmioRegister.DriverFeaturesSel, 1);
        W32(t, VirtioMmioRegister.DriverFeatures, (uint)(features >> 32));
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FeaturesOk);
        for (int q = 0; q < queueCount; q++)
        {
            W32(t, VirtioMmioRegister.QueueSel, (uint)q);
            W32(t, VirtioMmioRegister.QueueNum, Math.Min(image.QueueSize, t.Device.MaxQueueSize));
            W32(t, VirtioMmioRegister.QueueDescLow, (uint)QueueImage.Desc(q));
            W32(t, VirtioMmioRegister.QueueDescHigh, 0);
            W32(t, VirtioMmioRegister.QueueDriverLow, (uint)QueueImage.Avail(q));
            W32(t, VirtioMmioRegister.QueueDriverHigh, 0);
            W32(t, VirtioMmioRegister.QueueDeviceLow, (uint)QueueImage.Used(q));
            W32(t, VirtioMmioRegister.QueueDeviceHigh, 0);
            W32(t, VirtioMmioRegister.QueueReady, 1);
        }
        W32(t, VirtioMmioRegister.Status, Ack | Drv | FeaturesOk | VirtioStatus.DriverOk);
    }

    /// <summary>Notifies every queue the image published on, in the image's order.</summary>
    public static void NotifyAll(VirtioMmioTransport t, QueueImage image)
    {
        foreach (var (q, _) in image.Blocks) W32(t, VirtioMmioRegister.QueueNotify, (uint)q);
    }
}
