using System.Diagnostics;

namespace FireSharp.Tests.Support;

/// <summary>
/// Clients the project did not write, for the API's trust-boundary checks: curl (HTTP/2, speaking gRPC by hand:
/// a 5-byte frame header and the message) and openssl s_client, each optionally run as another user through
/// util-linux setpriv. All come from Debian packages listed in the Makefile's APT_PACKAGES.
/// </summary>
internal static class ExternalClients
{
    /// <summary>The result of a gRPC call made with curl: the grpc-status and grpc-message it got (null if none: no gRPC answer).</summary>
    public sealed record CurlGrpcResult(int ExitCode, int? GrpcStatus, string? GrpcMessage, string Output);

    /// <summary>
    /// Calls <paramref name="method"/> (/package.Service/Method) with an empty request message (every field at
    /// its default). <paramref name="transport"/> is curl's connection arguments (--unix-socket ... or the TLS
    /// files); <paramref name="asUser"/> runs curl under setpriv as that user and its group, with no supplementary groups.
    /// </summary>
    public static async Task<CurlGrpcResult> CurlGrpcAsync(string url, string method, IEnumerable<string> transport, string? asUser = null, string? asGroup = null)
    {
        string body = Path.Combine(Path.GetTempPath(), "grpc-empty-" + Guid.NewGuid().ToString("N")[..8]);
        await File.WriteAllBytesAsync(body, new byte[5]); // not compressed, length 0
        try
        {
            string[] curl = ["/usr/bin/curl", "-sS", "--max-time", "20", "-D", "-", "-o", "/dev/null", "-X", "POST",
                "-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", "@" + body, .. transport, url.TrimEnd('/') + method];
            var (code, stdout, stderr) = await RunAsync(asUser is null ? curl : AsUser(asUser, asGroup ?? asUser, curl));
            int? status = null;
            string? message = null;
            foreach (var raw in stdout.Split('\n'))
            {
                string line = raw.TrimEnd('\r');
                if (line.StartsWith("grpc-status:", StringComparison.OrdinalIgnoreCase)) status = int.Parse(line[12..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
                if (line.StartsWith("grpc-message:", StringComparison.OrdinalIgnoreCase)) message = Uri.UnescapeDataString(line[13..].Trim());
            }
            return new CurlGrpcResult(code, status, message, stdout + stderr);
        }
        finally
        {
            File.Delete(body);
        }
    }

    /// <summary>
    /// openssl s_client: a TLS 1.2 handshake that then sends nothing for 2 s and closes (exit 0 when the server kept
    /// the session; non-zero when it dropped the connection or sent an alert).
    /// </summary>
    public static Task<(int Code, string Stdout, string Stderr)> SClientAsync(int port, string certPem, string keyPem, string caPem) =>
        RunAsync(["/bin/sh", "-c", "sleep 2 | /usr/bin/openssl s_client -connect 127.0.0.1:$0 -servername localhost -tls1_2 -alpn h2 -cert \"$1\" -key \"$2\" -CAfile \"$3\" -verify_return_error -state",
            port.ToString(System.Globalization.CultureInfo.InvariantCulture), certPem, keyPem, caPem]);

    /// <summary>The command under setpriv as another user and group, with no supplementary groups.</summary>
    public static string[] AsUser(string user, string group, string[] command) =>
        ["/usr/bin/setpriv", $"--reuid={user}", $"--regid={group}", "--clear-groups", "--", .. command];

    public static async Task<(int Code, string Stdout, string Stderr)> RunAsync(string[] command, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in command[1..]) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            await p.WaitForExitAsync().WaitAsync(timeout ?? TimeSpan.FromSeconds(60));
        }
        catch (TimeoutException)
        {
            p.Kill(entireProcessTree: true);
            throw;
        }
        return (p.ExitCode, await stdout, await stderr);
    }
}
