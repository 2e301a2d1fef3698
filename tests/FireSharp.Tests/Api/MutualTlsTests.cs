using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using FireSharp.Daemon;
using FireSharp.Proto.V1;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>The optional TCP listener: only clients whose certificate chains to the configured CA get in.</summary>
[Collection("kvm")]
public sealed class MutualTlsTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Tcp_requires_a_client_certificate_from_the_configured_ca()
    {
        string dir = ApiTestServer.NewStateDir();
        try
        {
            var ca = NewCa("FireSharp test CA");
            var rogueCa = NewCa("Someone else's CA");
            string caPem = Write(dir, "ca.pem", ca.ExportCertificatePem());
            var (serverCert, serverKey) = Issue(ca, "localhost", server: true);
            var (clientCert, clientKey) = Issue(ca, "client-1", server: false);
            var (rogueCert, rogueKey) = Issue(rogueCa, "intruder", server: false);
            string serverPem = Write(dir, "server.pem", serverCert), serverKeyPem = Write(dir, "server.key", serverKey);
            string clientPem = Write(dir, "client.pem", clientCert), clientKeyPem = Write(dir, "client.key", clientKey);
            string roguePem = Write(dir, "rogue.pem", rogueCert), rogueKeyPem = Write(dir, "rogue.key", rogueKey);
            int port = FreePort();

            await using var s = await ApiTestServer.StartAsync(output, o => o with
            {
                TcpListen = $"127.0.0.1:{port}",
                TlsCertificate = serverPem,
                TlsKey = serverKeyPem,
                TlsClientCa = caPem,
            });
            string address = $"https://localhost:{port}";

            using (var good = DaemonChannel.ForTcp(address, clientPem, clientKeyPem, caPem))
            {
                var client = new VmService.VmServiceClient(good);
                await client.CreateVmAsync(new CreateVmRequest { Id = "tls", Spec = ApiTestServer.Spec("hello") });
                Assert.Equal("tls", Assert.Single((await client.ListVmsAsync(new ListVmsRequest())).Vms).Id);
            }

            using (var rogue = DaemonChannel.ForTcp(address, roguePem, rogueKeyPem, caPem))
            {
                var e = await Assert.ThrowsAsync<RpcException>(() => new VmService.VmServiceClient(rogue).ListVmsAsync(new ListVmsRequest()).ResponseAsync);
                Assert.Contains(e.StatusCode, new[] { StatusCode.Unavailable, StatusCode.Internal });
            }

            // No certificate at all (the server's certificate is trusted, so only the missing client certificate fails).
            var caCert = X509CertificateLoader.LoadCertificateFromFile(caPem);
            var handler = new SocketsHttpHandler
            {
                SslOptions = new System.Net.Security.SslClientAuthenticationOptions
                {
                    RemoteCertificateValidationCallback = (_, cert, _, _) => cert is X509Certificate2 c && FireSharp.Daemon.Hosting.DaemonHost.ChainsTo(c, caCert),
                },
            };
            using (var anonymous = GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler }))
            {
                // With TLS 1.3 the client's handshake completes before the server refuses it; the client then sees the
                // connection torn down (Internal or Unavailable, depending on timing). Either way: no answer.
                var e = await Assert.ThrowsAsync<RpcException>(() => new VmService.VmServiceClient(anonymous).ListVmsAsync(new ListVmsRequest()).ResponseAsync);
                Assert.Contains(e.StatusCode, new[] { StatusCode.Unavailable, StatusCode.Internal });
            }

            // A client that does not trust the server's CA refuses to talk to it.
            string roguePemCa = Write(dir, "rogue-ca.pem", rogueCa.ExportCertificatePem());
            using (var distrust = DaemonChannel.ForTcp(address, clientPem, clientKeyPem, roguePemCa))
            {
                var e = await Assert.ThrowsAsync<RpcException>(() => new VmService.VmServiceClient(distrust).ListVmsAsync(new ListVmsRequest()).ResponseAsync);
                Assert.Contains(e.StatusCode, new[] { StatusCode.Unavailable, StatusCode.Internal });
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Tcp_without_tls_settings_is_refused_by_configuration()
    {
        var e = Assert.Throws<ArgumentException>(() => new DaemonOptions { TcpListen = "127.0.0.1:7000" }.Validate());
        Assert.Contains("mutual TLS", e.Message);
    }

    private static X509Certificate2 NewCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        return req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    private static (string CertPem, string KeyPem) Issue(X509Certificate2 ca, string name, bool server)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [new Oid(server ? "1.3.6.1.5.5.7.3.1" : "1.3.6.1.5.5.7.3.2")], false));
        if (server)
        {
            var san = new SubjectAlternativeNameBuilder();
            san.AddDnsName("localhost");
            san.AddIpAddress(IPAddress.Loopback);
            req.CertificateExtensions.Add(san.Build());
        }
        using var cert = req.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddHours(12), RandomNumberGenerator.GetBytes(8));
        return (cert.ExportCertificatePem(), key.ExportPkcs8PrivateKeyPem());
    }

    private static string Write(string dir, string name, string text)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
