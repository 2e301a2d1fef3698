using System.Globalization;
using System.Security.Cryptography;

using FireSharp.Pool;

namespace FireSharp.Daemon.Functions.Lambda;

/// <summary>
/// Where functions appear to live, for the names Lambda gives things: the function ARN
/// (<c>arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME</c>) and X-Ray trace ids.
/// </summary>
public sealed record LambdaIdentity(string Partition = "aws", string Region = "local", string AccountId = "000000000000")
{
    public string FunctionArn(string functionName) => $"arn:{Partition}:lambda:{Region}:{AccountId}:function:{functionName}";

    /// <summary>X-Ray's format: <c>Root=1-&lt;8 hex digits of epoch seconds&gt;-&lt;24 random hex digits&gt;</c>.</summary>
    public static string NewTraceId(DateTimeOffset now) =>
        string.Create(CultureInfo.InvariantCulture,
            $"Root=1-{now.ToUnixTimeSeconds():x8}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12))}");
}
