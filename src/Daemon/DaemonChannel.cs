using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Grpc.Net.Client;

namespace FireSharp.Daemon;

/// <summary>gRPC channels to the daemon: over its Unix socket, or over TCP with a client certificate.</summary>
public static class DaemonChannel
{
    public const string DefaultSocket = "/run/firesharp/firesharp.sock";

    /// <summary>A channel over a Unix socket (HTTP/2 without TLS; the socket's permissions are the access control).</summary>
    /// <summary>Largest message either way: a function's 6 MB invoke payload or response, with room for the envelope.</summary>
    public const int MaxMessageBytes = Functions.FunctionServices.MaxMessageBytes;

    public static GrpcChannel ForUnixSocket(string socketPath)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            EnableMultipleHttp2Connections = true,
        };
        return GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true, MaxReceiveMessageSize = MaxMessageBytes, MaxSendMessageSize = MaxMessageBytes });
    }

    /// <summary>
    /// A channel over TCP with mutual TLS: <paramref name="address"/> is https://host:port; the client presents
    /// the certificate and key (PEM) and accepts only a server certificate that chains to <paramref name="caPem"/>.
    /// </summary>
    public static GrpcChannel ForTcp(string address, string certPem, string keyPem, string caPem)
    {
        var clientCert = X509Certificate2.CreateFromPemFile(certPem, keyPem);
        var ca = X509CertificateLoader.LoadCertificateFromFile(caPem);
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = [clientCert],
                RemoteCertificateValidationCallback = (_, cert, _, errors) =>
                    cert is X509Certificate2 c && (errors & ~(SslPolicyErrors.RemoteCertificateChainErrors)) == SslPolicyErrors.None
                    && Hosting.DaemonHost.ChainsTo(c, ca),
            },
            EnableMultipleHttp2Connections = true,
        };
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true, MaxReceiveMessageSize = MaxMessageBytes, MaxSendMessageSize = MaxMessageBytes });
    }
}
