// Over 400 lines: the 8042 controller is one register-level state machine (command byte, output buffer,
// keyboard commands); splitting it would scatter the datasheet mapping. State lives in I8042State.
namespace FireSharp.Devices.Legacy;

/// <summary>
/// A minimal i8042 keyboard controller, enough for a Linux guest booted with
/// <c>i8042.noaux i8042.nomux i8042.dumbkbd</c> to probe it, and for <c>reboot=k</c> (command
/// 0xFE) to become a VM exit.
/// </summary>
/// <remarks>
/// <para><b>Registration.</b> Register one instance at port <see cref="BasePort"/> (0x60) with
/// length <see cref="PortCount"/> (5): offset 0 is the data port 0x60, offset 4 the status/command
/// port 0x64. Offsets 1–3 (ports 0x61–0x63) belong to other chips; they read 0xFF and ignore writes
/// (with KVM's in-kernel PIT, port 0x61 never reaches user space anyway). The keyboard interrupt is
/// ISA IRQ <see cref="KeyboardIrq"/>.</para>
/// <para><b>Model.</b> Commands complete instantly, so the input-buffer-full bit is never set.
/// Status: bit 0 output buffer full, bit 2 system flag (mirrors command-byte bit 2), bit 3 last write
/// was a command, bit 4 keyboard not locked (always set), bit 5 the head byte is from the aux port.
/// Controller commands handled: 0x20–0x3F read (0x20 is the command byte, the rest read 0),
/// 0x60–0x7F write (0x60 is the command byte), 0xA7/0xA8 aux disable/enable, 0xA9 aux test (0x00),
/// 0xAA self test (0x55), 0xAB keyboard test (0x00), 0xAD/0xAE keyboard disable/enable,
/// 0xC0 input port (0x80), 0xD0/0xD1 output port, 0xD2/0xD3 write keyboard/aux output buffer,
/// 0xD4 write to aux (discarded: no mouse), 0xDD/0xDF A20, and 0xF0–0xFE with bit 0 clear, which
/// pulse the CPU reset line: that calls the <c>resetRequested</c> callback (on the calling vCPU
/// thread, outside the device lock). Other commands are ignored. A controller reply replaces
/// whatever was in the output buffer, as on hardware.</para>
/// <para>Bytes written to port 0x60 with no command pending go to an emulated keyboard that
/// answers ACK (0xFA) to everything, plus: 0xEE echo, 0xF2 identify (0xFA 0xAB 0x83), 0xFF reset
/// (0xFA 0xAA), and 0xED/0xF0/0xF3 take a parameter (0xF0 0x00 reports set 2). Scancodes are
/// scan code set 2 and are never translated: the default command byte (0x25) has translation off, so
/// Linux drives the keyboard in direct mode.</para>
/// <para><b>Interrupts.</b> IRQ 1 is treated as level "keyboard byte at the head of the buffer and
/// command-byte bit 0 set"; every rising edge of that level is sent as one
/// <see cref="IInterruptLine.Pulse"/>, outside the device lock. Reading a byte drops the level, so a
/// following keyboard byte pulses again. The output buffer holds
/// <see cref="OutputBufferCapacity"/> bytes.</para>
/// <para>Thread-safe: <see cref="Read"/>/<see cref="Write"/> from vCPU threads and
/// <see cref="EnqueueKeyboard"/>/<see cref="SendCtrlAltDel"/> from any thread.</para>
/// </remarks>
public sealed class I8042 : IBusDevice, IStatefulDevice
{
    /// <summary>Port to register the device at (the data port).</summary>
    public const ushort BasePort = 0x60;

    /// <summary>Length of the registered range: ports 0x60–0x64.</summary>
    public const int PortCount = 5;

    /// <summary>ISA interrupt of the keyboard.</summary>
    public const int KeyboardIrq = 1;

    /// <summary>Bytes the output buffer holds.</summary>
    public const int OutputBufferCapacity = 16;

    /// <summary>Command byte after power-on: keyboard interrupt on, system flag, aux disabled, no translation.</summary>
    public const byte DefaultControl = CtrKbdInt | CtrSys | CtrAuxDisabled;

    /// <summary>Output port after power-on: reset line deasserted (bit 0), A20 enabled (bit 1).</summary>
    public const byte DefaultOutputPort = 0x03;

    private const ulong DataOffset = 0;
    private const ulong CommandOffset = 4;

    private const byte StatusOutputFull = 0x01;
    private const byte StatusSystem = 0x04;
    private const byte StatusCommand = 0x08;
    private const byte StatusNotLocked = 0x10;
    private const byte StatusAuxData = 0x20;

    private const byte CtrKbdInt = 0x01;
    private const byte CtrSys = 0x04;
    private const byte CtrKbdDisabled = 0x10;
    private const byte CtrAuxDisabled = 0x20;

    private const byte CmdReadControl = 0x20;
    private const byte CmdWriteControl = 0x60;
    private const byte CmdAuxDisable = 0xA7;
    private const byte CmdAuxEnable = 0xA8;
    private const byte CmdAuxTest = 0xA9;
    private const byte CmdSelfTest = 0xAA;
    private const byte CmdKbdTest = 0xAB;
    private const byte CmdKbdDisable = 0xAD;
    private const byte CmdKbdEnable = 0xAE;
    private const byte CmdReadInputPort = 0xC0;
    private const byte CmdReadOutputPort = 0xD0;
    private const byte CmdWriteOutputPort = 0xD1;
    private const byte CmdWriteKbdBuffer = 0xD2;
    private const byte CmdWriteAuxBuffer = 0xD3;
    private const byte CmdWriteAux = 0xD4;
    private const byte CmdA20Off = 0xDD;
    private const byte CmdA20On = 0xDF;

    private const byte SelfTestPassed = 0x55;
    private const byte InterfaceTestPassed = 0x00;
    private const byte InputPortValue = 0x80; // keyboard not inhibited
    private const byte OutputPortA20 = 0x02;

    private const byte KbdAck = 0xFA;
    private const byte KbdSetLeds = 0xED;
    private const byte KbdEcho = 0xEE;
    private const byte KbdScanCodeSet = 0xF0;
    private const byte KbdIdentify = 0xF2;
    private const byte KbdTypematic = 0xF3;
    private const byte KbdReset = 0xFF;
    private const byte KbdSelfTestPassed = 0xAA;

    /// <summary>Ctrl, Alt, Delete pressed, then released, in scan code set 2.</summary>
    private static ReadOnlySpan<byte> CtrlAltDelSet2 =>
        [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14];

    private readonly Action _resetRequested;
    private readonly IInterruptLine _keyboardInterrupt;
    private readonly object _gate = new();

    // State (under _gate).
    private readonly I8042OutputByte[] _buffer = new I8042OutputByte[OutputBufferCapacity];
    private int _head;
    private int _count;
    private byte _control = DefaultControl;
    private byte _outputPort = DefaultOutputPort;
    private byte _pendingCommand;
    private byte _pendingKeyboardCommand;
    private bool _lastWriteWasCommand;
    private byte _lastOutput;
    private bool _irqLevel; // last computed IRQ 1 level, to detect rising edges

    /// <param name="resetRequested">Called when the guest pulses the reset line (command 0xFE).</param>
    /// <param name="keyboardInterrupt">IRQ 1, pulsed on each keyboard byte; null for none.</param>
    public I8042(Action resetRequested, IInterruptLine? keyboardInterrupt = null)
    {
        ArgumentNullException.ThrowIfNull(resetRequested);
        _resetRequested = resetRequested;
        _keyboardInterrupt = keyboardInterrupt ?? NullInterruptLine.Instance;
    }

    /// <summary>Snapshot id ("i8042").</summary>
    public string StateId => "i8042";

    /// <inheritdoc />
    public byte[] SaveState() => GetState().Encode();

    /// <inheritdoc />
    public void RestoreState(ReadOnlySpan<byte> state)
    {
        var decoded = I8042State.Decode(state);
        if (decoded.Output.Length > OutputBufferCapacity)
            throw new InvalidDataException($"i8042 state holds {decoded.Output.Length} output bytes; the buffer holds {OutputBufferCapacity}");
        SetState(decoded);
    }

    /// <inheritdoc />
    public void Read(ulong offset, Span<byte> data)
    {
        bool pulse = false;
        lock (_gate)
        {
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = ReadPort(offset + (ulong)i);
            }

            pulse |= UpdateIrqLevel();
        }

        if (pulse)
        {
            _keyboardInterrupt.Pulse();
        }
    }

    /// <inheritdoc />
    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        bool pulse = false;
        int resets = 0;
        lock (_gate)
        {
            for (int i = 0; i < data.Length; i++)
            {
                if (WritePort(offset + (ulong)i, data[i]))
                {
                    resets++;
                }
            }

            pulse = UpdateIrqLevel();
        }

        if (pulse)
        {
            _keyboardInterrupt.Pulse();
        }

        for (int i = 0; i < resets; i++)
        {
            _resetRequested();
        }
    }

    /// <summary>
    /// Queues keyboard bytes (scan code set 2) as if typed, all or nothing. Thread-safe.
    /// </summary>
    /// <returns>False, and nothing queued, if the output buffer lacks room for all of them.</returns>
    public bool EnqueueKeyboard(ReadOnlySpan<byte> scancodes)
    {
        bool pulse;
        lock (_gate)
        {
            if (OutputBufferCapacity - _count < scancodes.Length)
            {
                return false;
            }

            foreach (byte b in scancodes)
            {
                Push(b, I8042Source.Keyboard);
            }

            pulse = UpdateIrqLevel();
        }

        if (pulse)
        {
            _keyboardInterrupt.Pulse();
        }

        return true;
    }

    /// <summary>
    /// Types Ctrl+Alt+Delete (press and release), which a Linux guest turns into a reboot or a
    /// signal to init. Thread-safe.
    /// </summary>
    /// <returns>False if the output buffer lacks room.</returns>
    public bool SendCtrlAltDel() => EnqueueKeyboard(CtrlAltDelSet2);

    /// <summary>A consistent copy of the device state.</summary>
    public I8042State GetState()
    {
        lock (_gate)
        {
            var output = new I8042OutputByte[_count];
            for (int i = 0; i < _count; i++)
            {
                output[i] = _buffer[(_head + i) % OutputBufferCapacity];
            }

            return new I8042State
            {
                Control = _control,
                OutputPort = _outputPort,
                PendingCommand = _pendingCommand,
                PendingKeyboardCommand = _pendingKeyboardCommand,
                LastWriteWasCommand = _lastWriteWasCommand,
                LastOutput = _lastOutput,
                Output = output,
            };
        }
    }

    /// <summary>
    /// Replaces the device state (snapshot restore). If a keyboard byte is waiting and the
    /// keyboard interrupt is enabled, IRQ 1 is pulsed once, since the guest may not have seen it.
    /// </summary>
    /// <exception cref="ArgumentException">More output bytes than <see cref="OutputBufferCapacity"/>.</exception>
    public void SetState(I8042State state)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(state.Output, nameof(state));
        if (state.Output.Length > OutputBufferCapacity)
        {
            throw new ArgumentException(
                $"The state holds {state.Output.Length} output bytes; the i8042 buffers at most {OutputBufferCapacity}.",
                nameof(state));
        }

        bool pulse;
        lock (_gate)
        {
            _control = state.Control;
            _outputPort = state.OutputPort;
            _pendingCommand = state.PendingCommand;
            _pendingKeyboardCommand = state.PendingKeyboardCommand;
            _lastWriteWasCommand = state.LastWriteWasCommand;
            _lastOutput = state.LastOutput;
            state.Output.CopyTo(_buffer, 0);
            _head = 0;
            _count = state.Output.Length;
            _irqLevel = false;
            pulse = UpdateIrqLevel();
        }

        if (pulse)
        {
            _keyboardInterrupt.Pulse();
        }
    }

    private byte ReadPort(ulong offset)
    {
        switch (offset)
        {
            case DataOffset:
                if (_count == 0)
                {
                    return _lastOutput; // the data register keeps its last value
                }

                _lastOutput = _buffer[_head].Value;
                _head = (_head + 1) % OutputBufferCapacity;
                _count--;
                _irqLevel = false; // OBF drops; the next keyboard byte is a new edge
                return _lastOutput;
            case CommandOffset:
                return Status();
            default:
                return 0xFF;
        }
    }

    private byte Status()
    {
        byte status = StatusNotLocked;
        if (_count > 0)
        {
            status |= StatusOutputFull;
            if (_buffer[_head].Source == I8042Source.Aux)
            {
                status |= StatusAuxData;
            }
        }

        if ((_control & CtrSys) != 0)
        {
            status |= StatusSystem;
        }

        if (_lastWriteWasCommand)
        {
            status |= StatusCommand;
        }

        return status;
    }

    /// <returns>True if the write pulsed the reset line.</returns>
    private bool WritePort(ulong offset, byte value)
    {
        switch (offset)
        {
            case DataOffset:
                _lastWriteWasCommand = false;
                if (_pendingCommand != 0)
                {
                    byte command = _pendingCommand;
                    _pendingCommand = 0;
                    CommandData(command, value);
                }
                else
                {
                    KeyboardWrite(value);
                }

                return false;
            case CommandOffset:
                _lastWriteWasCommand = true;
                return Command(value);
            default:
                return false;
        }
    }

    private bool Command(byte command)
    {
        // A new command abandons one still waiting for its data byte.
        _pendingCommand = 0;
        switch (command)
        {
            case CmdReadControl:
                Reply(_control);
                break;
            case > CmdReadControl and <= 0x3F:
                Reply(0); // other controller RAM bytes
                break;
            case >= CmdWriteControl and <= 0x7F:
            case CmdWriteOutputPort:
            case CmdWriteKbdBuffer:
            case CmdWriteAuxBuffer:
            case CmdWriteAux:
                _pendingCommand = command;
                break;
            case CmdAuxDisable:
                _control |= CtrAuxDisabled;
                break;
            case CmdAuxEnable:
                _control &= unchecked((byte)~CtrAuxDisabled);
                break;
            case CmdAuxTest:
            case CmdKbdTest:
                Reply(InterfaceTestPassed);
                break;
            case CmdSelfTest:
                _control |= CtrSys;
                Reply(SelfTestPassed);
                break;
            case CmdKbdDisable:
                _control |= CtrKbdDisabled;
                break;
            case CmdKbdEnable:
                _control &= unchecked((byte)~CtrKbdDisabled);
                break;
            case CmdReadInputPort:
                Reply(InputPortValue);
                break;
            case CmdReadOutputPort:
                Reply(_outputPort);
                break;
            case CmdA20Off:
                _outputPort &= unchecked((byte)~OutputPortA20);
                break;
            case CmdA20On:
                _outputPort |= OutputPortA20;
                break;
            case >= 0xF0 when (command & 0x01) == 0:
                // "Pulse output lines": bits 0-3 low select the lines to pulse; bit 0 is CPU reset.
                return true;
            default:
                break;
        }

        return false;
    }

    private void CommandData(byte command, byte value)
    {
        switch (command)
        {
            case CmdWriteControl:
                _control = value;
                break;
            case CmdWriteOutputPort:
                _outputPort = value;
                break;
            case CmdWriteKbdBuffer:
                Push(value, I8042Source.Keyboard);
                break;
            case CmdWriteAuxBuffer:
                Push(value, I8042Source.Aux);
                break;
            default:
                // 0x61-0x7F (controller RAM) and 0xD4 (to the absent mouse): discarded.
                break;
        }
    }

    private void KeyboardWrite(byte value)
    {
        // A keyboard answers a command before sending anything else; drop stale scancodes.
        Clear();
        if (_pendingKeyboardCommand != 0)
        {
            byte command = _pendingKeyboardCommand;
            _pendingKeyboardCommand = 0;
            Push(KbdAck, I8042Source.Keyboard);
            if (command == KbdScanCodeSet && value == 0)
            {
                Push(0x02, I8042Source.Keyboard); // "get current set": set 2
            }

            return;
        }

        switch (value)
        {
            case KbdSetLeds:
            case KbdScanCodeSet:
            case KbdTypematic:
                _pendingKeyboardCommand = value;
                Push(KbdAck, I8042Source.Keyboard);
                break;
            case KbdEcho:
                Push(KbdEcho, I8042Source.Keyboard);
                break;
            case KbdIdentify:
                Push(KbdAck, I8042Source.Keyboard);
                Push(0xAB, I8042Source.Keyboard);
                Push(0x83, I8042Source.Keyboard);
                break;
            case KbdReset:
                Push(KbdAck, I8042Source.Keyboard);
                Push(KbdSelfTestPassed, I8042Source.Keyboard);
                break;
            default:
                Push(KbdAck, I8042Source.Keyboard);
                break;
        }
    }

    /// <summary>A controller reply overwrites the output buffer.</summary>
    private void Reply(byte value)
    {
        Clear();
        Push(value, I8042Source.Controller);
    }

    private void Clear()
    {
        _head = 0;
        _count = 0;
        _irqLevel = false; // whatever comes next is new data: a new edge
    }

    private void Push(byte value, I8042Source source)
    {
        if (_count == OutputBufferCapacity)
        {
            return; // full: the byte is lost, as with a keyboard whose host does not read
        }

        _buffer[(_head + _count) % OutputBufferCapacity] = new I8042OutputByte(value, source);
        _count++;
    }

    /// <returns>True on a rising edge of the IRQ 1 level (caller pulses outside the lock).</returns>
    private bool UpdateIrqLevel()
    {
        bool level = _count > 0
                     && _buffer[_head].Source == I8042Source.Keyboard
                     && (_control & CtrKbdInt) != 0;
        bool rising = level && !_irqLevel;
        _irqLevel = level;
        return rising;
    }
}
