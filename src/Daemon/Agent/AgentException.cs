using FireSharp.Proto.Agent;

namespace FireSharp.Daemon.Agent;

/// <summary>Why an agent call failed.</summary>
public enum AgentFailure
{
    /// <summary>The socket could not be reached, or the hybrid vsock handshake failed.</summary>
    ConnectFailed,
    /// <summary>The connection ended or broke in the middle of a call (or was aborted by cancellation).</summary>
    ConnectionLost,
    /// <summary>The agent sent something the protocol does not allow here.</summary>
    ProtocolError,
    /// <summary>The agent answered with an Error; see <see cref="AgentException.Code"/>.</summary>
    Remote,
}

/// <summary>An agent call failed; <see cref="Failure"/> says how, <see cref="Code"/> what the agent said.</summary>
public sealed class AgentException : Exception
{
    public AgentException(AgentFailure failure, string message, ErrorCode code = ErrorCode.Unspecified, Exception? inner = null)
        : base(message, inner)
    {
        Failure = failure;
        Code = code;
    }

    public AgentFailure Failure { get; }

    /// <summary>The agent's error code when <see cref="Failure"/> is <see cref="AgentFailure.Remote"/>.</summary>
    public ErrorCode Code { get; }
}
