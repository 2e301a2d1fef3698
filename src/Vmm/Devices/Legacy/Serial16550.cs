// Over 400 lines: the 16550 is one register-level state machine (DLAB, FIFO, interrupt identification);
// splitting it would scatter the datasheet mapping. State lives in Serial16550State.
namespace FireSharp.Devices.Legacy;

/// <summary>
/// A 16550A UART as a plain state machine: eight byte-wide registers at offsets 0–7 of its port
/// range (COM1: <see cref="Com1Port"/>, IRQ <see cref="Com1Irq"/>).
/// </summary>
/// <remarks>
/// <para><b>Model.</b> Transmission is instantaneous: a THR write hands the byte to the
/// <see cref="ISerialSink"/> at once, so LSR always reports THRE and TEMT and the THR-empty
/// interrupt is re-armed after every write. Baud rate, parity and stop bits are stored but have no
/// effect. The modem lines outside loopback read as connected (DCD, DSR and CTS set).</para>
/// <para><b>Receive queue.</b> Host input goes into a bounded host-side queue of
/// <c>inputCapacity</c> bytes (default <see cref="DefaultInputCapacity"/>), whatever the FCR says,
/// instead of the chip's 16-byte FIFO, so pasted input is not lost while the guest is busy. Bytes
/// that do not fit are dropped and set the overrun bit (LSR bit 1), which raises a line-status
/// interrupt if IER bit 2 is set; the bit clears when LSR is read. Enabling, disabling or clearing
/// the receive FIFO through FCR empties the queue, as on hardware. The RDA interrupt is pending
/// whenever the queue is non-empty (trigger levels and the character timeout are not modelled).
/// In loopback mode transmitted bytes go into the same queue instead of the sink; host input is
/// still queued.</para>
/// <para><b>Interrupts.</b> IIR priority as the datasheet: line status (0x06), received data (0x04),
/// THR empty (0x02), modem status (0x00); bits 6–7 are set while FIFOs are enabled. The THR-empty
/// interrupt becomes pending when IER bit 1 goes from 0 to 1 and after each transmitted byte; it
/// clears when an IIR read reports it or THR is written. The line given to the constructor is driven
/// high while any enabled interrupt is pending and low otherwise, only on changes.</para>
/// <para><b>Threads.</b> <see cref="Read"/>/<see cref="Write"/> (vCPU threads) and
/// <see cref="EnqueueInput"/> (any thread) may run concurrently. The register lock is never held
/// while calling the sink or the interrupt line. Sink calls are ordered by a separate transmit lock,
/// and line changes by a separate line lock that re-reads the state, so the line's last level always
/// matches the state.</para>
/// </remarks>
public sealed class Serial16550 : IBusDevice, IStatefulDevice
{
    /// <summary>Base port of COM1.</summary>
    public const ushort Com1Port = 0x3f8;

    /// <summary>ISA interrupt of COM1.</summary>
    public const int Com1Irq = 4;

    /// <summary>Number of ports the device decodes (offsets 0–7).</summary>
    public const int PortCount = 8;

    /// <summary>Default bound of the host-side receive queue.</summary>
    public const int DefaultInputCapacity = 4096;

    // Register offsets.
    private const int RbrThrDll = 0;
    private const int IerDlm = 1;
    private const int IirFcr = 2;
    private const int LcrOffset = 3;
    private const int McrOffset = 4;
    private const int LsrOffset = 5;
    private const int MsrOffset = 6;
    private const int ScrOffset = 7;

    private const byte IerRda = 0x01;
    private const byte IerThre = 0x02;
    private const byte IerLineStatus = 0x04;
    private const byte IerModemStatus = 0x08;
    private const byte IerMask = 0x0F;

    private const byte IirNoInterrupt = 0x01;
    private const byte IirLineStatus = 0x06;
    private const byte IirRda = 0x04;
    private const byte IirThre = 0x02;
    private const byte IirModemStatus = 0x00;
    private const byte IirFifoEnabled = 0xC0;

    private const byte FcrEnable = 0x01;
    private const byte FcrClearRx = 0x02;
    private const byte FcrStoredBits = 0xC9; // enable, DMA mode, trigger level

    private const byte LcrDlab = 0x80;

    private const byte McrDtr = 0x01;
    private const byte McrRts = 0x02;
    private const byte McrOut1 = 0x04;
    private const byte McrOut2 = 0x08;
    private const byte McrLoop = 0x10;
    private const byte McrMask = 0x1F;

    private const byte LsrDataReady = 0x01;
    private const byte LsrOverrun = 0x02;
    private const byte LsrErrorBits = 0x1E; // overrun, parity, framing, break
    private const byte LsrThrEmpty = 0x20;
    private const byte LsrTransmitterEmpty = 0x40;

    private const byte MsrDcts = 0x01;
    private const byte MsrDdsr = 0x02;
    private const byte MsrTeri = 0x04;
    private const byte MsrDdcd = 0x08;
    private const byte MsrDeltaBits = 0x0F;
    private const byte MsrCts = 0x10;
    private const byte MsrDsr = 0x20;
    private const byte MsrRi = 0x40;
    private const byte MsrDcd = 0x80;
    private const byte MsrStatusBits = 0xF0;

    /// <summary>Modem lines outside loopback: carrier, data set ready and clear to send.</summary>
    private const byte ConnectedModemStatus = MsrDcd | MsrDsr | MsrCts;

    private const byte DefaultDivisorLow = 12; // 9600 baud from the 1.8432 MHz clock

    private readonly ISerialSink _output;
    private readonly IInterruptLine _interrupt;

    private readonly object _gate = new();      // registers and receive queue
    private readonly object _txOrder = new();   // keeps sink calls in register-write order
    private readonly object _lineGate = new();  // serializes interrupt line changes

    // Registers (under _gate).
    private byte _ier;
    private byte _lcr;
    private byte _mcr;
    private byte _fcr;
    private byte _lsrErrors;
    private byte _msr = ConnectedModemStatus;
    private byte _scr;
    private byte _dll = DefaultDivisorLow;
    private byte _dlm;
    private bool _thrEmptyPending;

    // Receive queue: a ring of _rx.Length bytes (under _gate).
    private readonly byte[] _rx;
    private int _rxHead;
    private int _rxCount;

    // Level last driven on _interrupt (under _lineGate).
    private bool _lineHigh;

    /// <param name="output">Receives transmitted bytes.</param>
    /// <param name="interrupt">The UART's interrupt line (IRQ 4 for COM1); starts low.</param>
    /// <param name="inputCapacity">Bound of the host-side receive queue, in bytes.</param>
    public Serial16550(ISerialSink output, IInterruptLine interrupt, int inputCapacity = DefaultInputCapacity)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(interrupt);
        ArgumentOutOfRangeException.ThrowIfLessThan(inputCapacity, 1);
        _output = output;
        _interrupt = interrupt;
        _rx = new byte[inputCapacity];
    }

    /// <summary>Snapshot id of this UART ("com1" unless set).</summary>
    public string StateId { get; init; } = "com1";

    /// <inheritdoc />
    public byte[] SaveState() => GetState().Encode();

    /// <inheritdoc />
    public void RestoreState(ReadOnlySpan<byte> state)
    {
        var decoded = Serial16550State.Decode(state);
        if (decoded.PendingInput.Length > _rx.Length)
            throw new InvalidDataException($"16550 state holds {decoded.PendingInput.Length} input bytes; this UART queues at most {_rx.Length}");
        SetState(decoded);
    }

    /// <summary>Bound of the host-side receive queue.</summary>
    public int InputCapacity => _rx.Length;

    /// <summary>Received bytes the guest has not read yet.</summary>
    public int PendingInputCount
    {
        get { lock (_gate) { return _rxCount; } }
    }

    /// <summary>True while an enabled interrupt is pending (what the line is driven to).</summary>
    public bool InterruptPending
    {
        get { lock (_gate) { return (ComputeIir() & IirNoInterrupt) == 0; } }
    }

    /// <inheritdoc />
    /// <remarks>Wider accesses are split into byte accesses at consecutive offsets, as on the ISA bus;
    /// offsets past 7 read 0xFF.</remarks>
    public void Read(ulong offset, Span<byte> data)
    {
        lock (_gate)
        {
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = ReadRegister(offset + (ulong)i);
            }
        }

        UpdateLine();
    }

    /// <inheritdoc />
    /// <remarks>Wider accesses are split into byte accesses at consecutive offsets; writes past
    /// offset 7 are ignored.</remarks>
    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        lock (_txOrder)
        {
            Span<byte> transmitted = stackalloc byte[data.Length];
            int count = 0;
            lock (_gate)
            {
                for (int i = 0; i < data.Length; i++)
                {
                    if (WriteRegister(offset + (ulong)i, data[i]) is byte b)
                    {
                        transmitted[count++] = b;
                    }
                }
            }

            if (count > 0)
            {
                _output.Write(transmitted[..count]);
            }
        }

        UpdateLine();
    }

    /// <summary>
    /// Queues bytes from the host for the guest to receive. Thread-safe. Bytes beyond
    /// <see cref="InputCapacity"/> are dropped and set the overrun bit.
    /// </summary>
    /// <returns>How many bytes were queued.</returns>
    public int EnqueueInput(ReadOnlySpan<byte> data)
    {
        int accepted = 0;
        lock (_gate)
        {
            foreach (byte b in data)
            {
                if (PushReceived(b))
                {
                    accepted++;
                }
            }
        }

        UpdateLine();
        return accepted;
    }

    /// <summary>A consistent copy of the device state.</summary>
    public Serial16550State GetState()
    {
        lock (_gate)
        {
            var input = new byte[_rxCount];
            for (int i = 0; i < _rxCount; i++)
            {
                input[i] = _rx[(_rxHead + i) % _rx.Length];
            }

            return new Serial16550State
            {
                Ier = _ier,
                Lcr = _lcr,
                Mcr = _mcr,
                Fcr = _fcr,
                Lsr = ComputeLsr(),
                Msr = _msr,
                Scr = _scr,
                Dll = _dll,
                Dlm = _dlm,
                ThrEmptyInterruptPending = _thrEmptyPending,
                PendingInput = input,
            };
        }
    }

    /// <summary>
    /// Replaces the device state (snapshot restore) and drives the interrupt line to match.
    /// </summary>
    /// <exception cref="ArgumentException">More pending input than <see cref="InputCapacity"/>.</exception>
    public void SetState(Serial16550State state)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(state.PendingInput, nameof(state));
        if (state.PendingInput.Length > _rx.Length)
        {
            throw new ArgumentException(
                $"The state holds {state.PendingInput.Length} input bytes; this UART queues at most {_rx.Length}.",
                nameof(state));
        }

        lock (_gate)
        {
            _ier = (byte)(state.Ier & IerMask);
            _lcr = state.Lcr;
            _mcr = (byte)(state.Mcr & McrMask);
            _fcr = (byte)(state.Fcr & FcrStoredBits);
            _lsrErrors = (byte)(state.Lsr & LsrErrorBits);
            _msr = state.Msr;
            _scr = state.Scr;
            _dll = state.Dll;
            _dlm = state.Dlm;
            _thrEmptyPending = state.ThrEmptyInterruptPending;
            state.PendingInput.CopyTo(_rx, 0);
            _rxHead = 0;
            _rxCount = state.PendingInput.Length;
        }

        UpdateLine();
    }

    private bool Dlab => (_lcr & LcrDlab) != 0;

    private bool Loopback => (_mcr & McrLoop) != 0;

    private byte ReadRegister(ulong offset)
    {
        switch (offset)
        {
            case RbrThrDll:
                return Dlab ? _dll : PopReceived();
            case IerDlm:
                return Dlab ? _dlm : _ier;
            case IirFcr:
            {
                byte iir = ComputeIir();
                if ((iir & 0x0F) == IirThre)
                {
                    // Reading IIR while it reports THR empty acknowledges that interrupt.
                    _thrEmptyPending = false;
                }

                return iir;
            }
            case LcrOffset:
                return _lcr;
            case McrOffset:
                return _mcr;
            case LsrOffset:
            {
                byte lsr = ComputeLsr();
                _lsrErrors = 0; // error bits clear on read
                return lsr;
            }
            case MsrOffset:
            {
                byte msr = _msr;
                _msr &= MsrStatusBits; // delta bits clear on read
                return msr;
            }
            case ScrOffset:
                return _scr;
            default:
                return 0xFF;
        }
    }

    /// <returns>The byte to transmit, if the write was a THR write outside loopback.</returns>
    private byte? WriteRegister(ulong offset, byte value)
    {
        switch (offset)
        {
            case RbrThrDll:
                if (Dlab)
                {
                    _dll = value;
                    return null;
                }

                return Transmit(value);
            case IerDlm:
                if (Dlab)
                {
                    _dlm = value;
                }
                else
                {
                    byte old = _ier;
                    _ier = (byte)(value & IerMask);
                    if ((_ier & IerThre) != 0 && (old & IerThre) == 0)
                    {
                        // Enabling the THR-empty interrupt while THR is empty (always, here)
                        // raises it at once; Linux's 8250 driver tests for exactly this.
                        _thrEmptyPending = true;
                    }
                }

                return null;
            case IirFcr:
                WriteFcr(value);
                return null;
            case LcrOffset:
                _lcr = value;
                return null;
            case McrOffset:
                _mcr = (byte)(value & McrMask);
                UpdateModemStatus();
                return null;
            case ScrOffset:
                _scr = value;
                return null;
            default:
                // LSR and MSR are read-only here (writing them is a factory test feature).
                return null;
        }
    }

    private byte? Transmit(byte value)
    {
        // The byte leaves THR at once, so THR is empty again and the interrupt is re-armed.
        _thrEmptyPending = true;
        if (Loopback)
        {
            PushReceived(value);
            return null;
        }

        return value;
    }

    private void WriteFcr(byte value)
    {
        bool enable = (value & FcrEnable) != 0;
        if (enable != ((_fcr & FcrEnable) != 0) || (enable && (value & FcrClearRx) != 0))
        {
            // Switching FIFO mode on or off resets the FIFOs; so does the clear bit.
            _rxHead = 0;
            _rxCount = 0;
        }

        // With bit 0 clear the other bits are not programmed.
        _fcr = enable ? (byte)(value & FcrStoredBits) : (byte)0;
    }

    private void UpdateModemStatus()
    {
        byte status = ConnectedModemStatus;
        if (Loopback)
        {
            // Loopback wires the modem outputs back to the inputs.
            status = 0;
            if ((_mcr & McrRts) != 0) status |= MsrCts;
            if ((_mcr & McrDtr) != 0) status |= MsrDsr;
            if ((_mcr & McrOut1) != 0) status |= MsrRi;
            if ((_mcr & McrOut2) != 0) status |= MsrDcd;
        }

        byte old = (byte)(_msr & MsrStatusBits);
        byte changed = (byte)(old ^ status);
        byte delta = 0;
        if ((changed & MsrCts) != 0) delta |= MsrDcts;
        if ((changed & MsrDsr) != 0) delta |= MsrDdsr;
        if ((old & MsrRi) != 0 && (status & MsrRi) == 0) delta |= MsrTeri; // trailing edge only
        if ((changed & MsrDcd) != 0) delta |= MsrDdcd;
        _msr = (byte)(status | (_msr & MsrDeltaBits) | delta);
    }

    private byte ComputeLsr()
    {
        byte lsr = (byte)(LsrThrEmpty | LsrTransmitterEmpty | _lsrErrors);
        if (_rxCount > 0)
        {
            lsr |= LsrDataReady;
        }

        return lsr;
    }

    private byte ComputeIir()
    {
        byte id;
        if ((_ier & IerLineStatus) != 0 && _lsrErrors != 0)
        {
            id = IirLineStatus;
        }
        else if ((_ier & IerRda) != 0 && _rxCount > 0)
        {
            id = IirRda;
        }
        else if ((_ier & IerThre) != 0 && _thrEmptyPending)
        {
            id = IirThre;
        }
        else if ((_ier & IerModemStatus) != 0 && (_msr & MsrDeltaBits) != 0)
        {
            id = IirModemStatus;
        }
        else
        {
            id = IirNoInterrupt;
        }

        return (_fcr & FcrEnable) != 0 ? (byte)(id | IirFifoEnabled) : id;
    }

    private bool PushReceived(byte value)
    {
        if (_rxCount == _rx.Length)
        {
            _lsrErrors |= LsrOverrun;
            return false;
        }

        _rx[(_rxHead + _rxCount) % _rx.Length] = value;
        _rxCount++;
        return true;
    }

    private byte PopReceived()
    {
        if (_rxCount == 0)
        {
            return 0;
        }

        byte value = _rx[_rxHead];
        _rxHead = (_rxHead + 1) % _rx.Length;
        _rxCount--;
        return value;
    }

    private void UpdateLine()
    {
        // The level is recomputed inside the line lock, so concurrent updates cannot leave the line
        // at a stale level. The register lock is released before the line is touched.
        lock (_lineGate)
        {
            bool pending;
            lock (_gate)
            {
                pending = (ComputeIir() & IirNoInterrupt) == 0;
            }

            if (pending != _lineHigh)
            {
                _lineHigh = pending;
                _interrupt.SetLevel(pending);
            }
        }
    }
}
