using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using FireSharp.Daemon;
using FireSharp.Daemon.Auth;
using FireSharp.Proto.V1;
using FireSharp.Tests.Support;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace FireSharp.Tests.Api;

/// <summary>
/// The optional TCP listener: only clients whose certificate was issued by the configured CA for client
/// authentication, and is not revoked, complete the handshake; the allow-list then gives each a role. The
/// handshake refusal and PERMISSION_DENIED are each also checked with a client the project did not write
/// (openssl s_client, curl).
/// </summary>
[Collection("kvm")]
public sealed class MutualTlsTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = ApiTestServer.NewStateDir();
    private TestCertificates? _pki;

    public void Dispose()
    {
        _pki?.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A CA, the server's certificate, and the daemon on TCP with the given allow-list (and CRL).</summary>
    private async Task<(ApiTestServer Server, string Address, int Port, X509Certificate2 Ca)> StartAsync(string[] clients, Func<TestCertificates, X509Certificate2, string?>? crl = null)
    {
        _pki = new TestCertificates(_dir);
        var ca = _pki.NewCa("FireSharp test CA");
        var (_, serverPem, serverKey) = _pki.Issue(ca, "localhost", "server", [TestCertificates.ServerAuth], serverSan: true);
        string? crlPath = crl?.Invoke(_pki, ca);
        int port = FreePort();
        var server = await ApiTestServer.StartAsync(output, o => o with
        {
            TcpListen = $"127.0.0.1:{port}",
            TlsCertificate = serverPem,
            TlsKey = serverKey,
            TlsClientCa = _pki.PemOf(ca),
            TlsClientCrl = crlPath,
            TlsClients = clients.ToDictionary(c => c.Split('=')[0], c => ApiRoles.Parse(c.Split('=')[1])!.Value),
        });
        return (server, $"https://localhost:{port}", port, ca);
    }

    [SkippableFact]
    public async Task Tcp_requires_a_client_certificate_from_the_configured_ca()
    {
        var (s, address, _, ca) = await StartAsync(["client-1=operator"]);
        await using var _ = s;
        var pki = _pki!;
        var rogueCa = pki.NewCa("Someone else's CA");
        var (_, clientPem, clientKeyPem) = pki.Issue(ca, "client-1", "client", [TestCertificates.ClientAuth]);
        var (_, roguePem, rogueKeyPem) = pki.Issue(rogueCa, "client-1", "rogue", [TestCertificates.ClientAuth]);
        string caPem = pki.PemOf(ca);

        using (var good = DaemonChannel.ForTcp(address, clientPem, clientKeyPem, caPem))
        {
            var client = new VmService.VmServiceClient(good);
            await client.CreateVmAsync(new CreateVmRequest { Id = "tls", Spec = ApiTestServer.Spec("hello") });
            Assert.Equal("tls", Assert.Single((await client.ListVmsAsync(new ListVmsRequest())).Vms).Id);
        }

        using (var rogue = DaemonChannel.ForTcp(address, roguePem, rogueKeyPem, caPem))
            await AssertNoAnswerAsync(rogue);

        // No certificate at all (the server's certificate is trusted, so only the missing client certificate fails).
        var handler = new SocketsHttpHandler
        {
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, cert, _, _) => cert is X509Certificate2 c && FireSharp.Daemon.Hosting.DaemonHost.ChainsTo(c, ca),
            },
        };
        using (var anonymous = GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler }))
            await AssertNoAnswerAsync(anonymous);

        // A client that does not trust the server's CA refuses to talk to it.
        using (var distrust = DaemonChannel.ForTcp(address, clientPem, clientKeyPem, pki.PemOf(rogueCa)))
            await AssertNoAnswerAsync(distrust);
    }

    [SkippableFact]
    public async Task A_client_certificate_from_an_intermediate_ca_chains_when_the_client_sends_the_intermediate()
    {
        var (s, _, port, ca) = await StartAsync(["alice=viewer"]);
        await using var _ = s;
        var pki = _pki!;
        string caPem = pki.PemOf(ca);
        var intermediate = pki.IssueCa(ca, "team-ca");
        var (_, leafPem, leafKey) = pki.Issue(intermediate, "alice", "alice", [TestCertificates.ClientAuth]);
        string chainPem = Path.Combine(_dir, "alice-chain.pem");
        File.WriteAllText(chainPem, File.ReadAllText(leafPem).TrimEnd() + "\n" + File.ReadAllText(pki.PemOf(intermediate)).TrimEnd() + "\n");
        string[] tls(string cert) => ["--http2", "--cacert", caPem, "--cert", cert, "--key", leafKey];
        // curl sends the certificate and the intermediate: the chain ends at TlsClientCa, and alice is a viewer.
        var curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/ListVms", tls(chainPem));
        output.WriteLine(curl.Output);
        Assert.Equal(0, curl.GrpcStatus);
        curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/DeleteVm", tls(chainPem));
        Assert.Equal((int)StatusCode.PermissionDenied, curl.GrpcStatus);
        // The certificate alone does not chain (the daemon has no copy of the intermediate): the handshake fails.
        curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/ListVms", tls(leafPem));
        output.WriteLine(curl.Output);
        Assert.Null(curl.GrpcStatus);
        Assert.NotEqual(0, curl.ExitCode);
    }

    [SkippableFact]
    public async Task A_certificate_without_the_clientAuth_usage_fails_the_handshake()
    {
        var (s, address, port, ca) = await StartAsync(["localhost=admin", "client-1=viewer", "plain=admin"]);
        await using var _ = s;
        var pki = _pki!;
        string caPem = pki.PemOf(ca);
        var (_, goodPem, goodKey) = pki.Issue(ca, "client-1", "client", [TestCertificates.ClientAuth]);
        // The daemon's own kind of certificate (serverAuth only), and one with no EKU extension at all: both named in the allow-list.
        var (_, serverOnlyPem, serverOnlyKey) = pki.Issue(ca, "localhost", "server-only", [TestCertificates.ServerAuth], serverSan: true);
        var (_, plainPem, plainKey) = pki.Issue(ca, "plain", "plain", []);

        // openssl s_client: the good certificate completes the handshake; the serverAuth-only one is refused with an alert.
        var ok = await ExternalClients.SClientAsync(port, goodPem, goodKey, caPem);
        output.WriteLine($"s_client good: {ok.Code}\n{ok.Stdout}\n{ok.Stderr}");
        Assert.Equal(0, ok.Code);
        var refused = await ExternalClients.SClientAsync(port, serverOnlyPem, serverOnlyKey, caPem);
        output.WriteLine($"s_client serverAuth-only: {refused.Code}\n{refused.Stdout}\n{refused.Stderr}");
        // .NET (OpenSSL underneath) checks the client certificate once OpenSSL's handshake messages are done and
        // then drops the connection: s_client sees EOF where the session should continue, and fails.
        Assert.NotEqual(0, refused.Code);
        Assert.Contains("unexpected eof", refused.Stderr, StringComparison.OrdinalIgnoreCase);

        // curl: the same gRPC call gets an answer with the good certificate and none (a transport error) without clientAuth.
        string[] tls(string cert, string key) => ["--http2", "--cacert", caPem, "--cert", cert, "--key", key];
        var curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/ListVms", tls(goodPem, goodKey));
        Assert.Equal(0, curl.GrpcStatus);
        curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/ListVms", tls(serverOnlyPem, serverOnlyKey));
        output.WriteLine(curl.Output);
        Assert.Null(curl.GrpcStatus);
        Assert.NotEqual(0, curl.ExitCode);

        // The project's client sees the connection refused (no gRPC answer) for both.
        using (var serverOnly = DaemonChannel.ForTcp(address, serverOnlyPem, serverOnlyKey, caPem))
            await AssertNoAnswerAsync(serverOnly);
        using (var plain = DaemonChannel.ForTcp(address, plainPem, plainKey, caPem))
            await AssertNoAnswerAsync(plain);
    }

    [SkippableFact]
    public async Task Roles_viewer_lists_operator_creates_admin_snapshots_and_strangers_get_nothing()
    {
        var (s, address, port, ca) = await StartAsync(["watcher=viewer", "spiffe://firesharp.test/ci=operator"]);
        await using var _ = s;
        var pki = _pki!;
        string caPem = pki.PemOf(ca);
        var (_, viewerPem, viewerKey) = pki.Issue(ca, "watcher", "viewer", [TestCertificates.ClientAuth]);
        // The operator is named by its URI SAN, not its CN.
        var (_, operatorPem, operatorKey) = pki.Issue(ca, "ci-runner", "operator", [TestCertificates.ClientAuth], uris: ["spiffe://firesharp.test/ci"]);
        var (_, strangerPem, strangerKey) = pki.Issue(ca, "stranger", "stranger", [TestCertificates.ClientAuth]);

        using var viewerChannel = DaemonChannel.ForTcp(address, viewerPem, viewerKey, caPem);
        using var operatorChannel = DaemonChannel.ForTcp(address, operatorPem, operatorKey, caPem);
        using var strangerChannel = DaemonChannel.ForTcp(address, strangerPem, strangerKey, caPem);
        var viewer = new VmService.VmServiceClient(viewerChannel);
        var op = new VmService.VmServiceClient(operatorChannel);
        var stranger = new VmService.VmServiceClient(strangerChannel);

        // viewer: list yes, create no (naming the role needed).
        Assert.Empty((await viewer.ListVmsAsync(new ListVmsRequest())).Vms);
        var denied = await RpcAssert.FailsAsync(StatusCode.PermissionDenied, () => viewer.CreateVmAsync(new CreateVmRequest { Id = "v", Spec = ApiTestServer.Spec("counter") }).ResponseAsync);
        Assert.Contains("operator", denied.Status.Detail);
        Assert.Empty(s.VmDirs());

        // operator: create and start yes, snapshot no.
        await op.CreateVmAsync(new CreateVmRequest { Id = "o", Spec = ApiTestServer.Spec("counter"), Start = true });
        await s.WaitForStateAsync("o", VmState.Running);
        string snap = Path.Combine(_dir, "snap");
        denied = await RpcAssert.FailsAsync(StatusCode.PermissionDenied, () => op.CreateSnapshotAsync(new CreateSnapshotRequest { Id = "o", Dir = snap }).ResponseAsync);
        Assert.Contains("admin", denied.Status.Detail);
        Assert.False(Directory.Exists(snap));
        Assert.Equal("o", Assert.Single((await viewer.ListVmsAsync(new ListVmsRequest())).Vms).Id);

        // The viewer may read the console but not type into it.
        using (var console = viewer.StreamConsole(deadline: DateTime.UtcNow.AddSeconds(30)))
        {
            await console.RequestStream.WriteAsync(new ConsoleRequest { Id = "o", Input = Google.Protobuf.ByteString.CopyFromUtf8("x") });
            var e = await Assert.ThrowsAsync<RpcException>(async () => { while (await console.ResponseStream.MoveNext()) { } });
            Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
            Assert.Contains("console input", e.Status.Detail);
        }
        Assert.Contains("COUNTING", await viewer.ReadConsoleUntilAsync("o", "COUNTING"));

        // A valid certificate outside the allow-list: PERMISSION_DENIED even for reading, with the project's client...
        await RpcAssert.FailsAsync(StatusCode.PermissionDenied, () => stranger.ListVmsAsync(new ListVmsRequest()).ResponseAsync);
        // ... and with curl.
        string[] tls(string cert, string key) => ["--http2", "--cacert", caPem, "--cert", cert, "--key", key];
        var curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/ListVms", tls(strangerPem, strangerKey));
        output.WriteLine(curl.Output);
        Assert.Equal((int)StatusCode.PermissionDenied, curl.GrpcStatus);
        Assert.Contains("viewer", curl.GrpcMessage);
        // curl with the viewer's certificate gets through (the same request, so the refusal above is the allow-list's).
        curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/ListVms", tls(viewerPem, viewerKey));
        output.WriteLine(curl.Output);
        Assert.Equal(0, curl.GrpcStatus);
        curl = await ExternalClients.CurlGrpcAsync($"https://localhost:{port}", "/firesharp.v1.VmService/DeleteVm", tls(viewerPem, viewerKey));
        Assert.Equal((int)StatusCode.PermissionDenied, curl.GrpcStatus);
    }

    [SkippableFact]
    public async Task A_revoked_certificate_is_refused_and_a_new_crl_is_picked_up_without_restart()
    {
        X509Certificate2? revokedCert = null;
        string? crlPath = null;
        var (s, address, port, ca) = await StartAsync(["client-1=viewer", "client-2=viewer"], (pki, ca) =>
        {
            revokedCert = pki.Issue(ca, "client-2", "revoked", [TestCertificates.ClientAuth]).Cert;
            return crlPath = pki.WriteCrl(ca, "ca.crl", 1, revokedCert);
        });
        await using var _ = s;
        var pki = _pki!;
        string caPem = pki.PemOf(ca);
        var (goodCert, goodPem, goodKey) = pki.Issue(ca, "client-1", "client", [TestCertificates.ClientAuth]);
        string revokedPem = Path.Combine(_dir, "revoked.pem"), revokedKey = Path.Combine(_dir, "revoked.key");

        using (var good = DaemonChannel.ForTcp(address, goodPem, goodKey, caPem))
            Assert.Empty((await new VmService.VmServiceClient(good).ListVmsAsync(new ListVmsRequest())).Vms);
        using (var revoked = DaemonChannel.ForTcp(address, revokedPem, revokedKey, caPem))
            await AssertNoAnswerAsync(revoked);
        var sclient = await ExternalClients.SClientAsync(port, revokedPem, revokedKey, caPem);
        Assert.NotEqual(0, sclient.Code);

        // Revoke client-1 too: the next handshake reads the new CRL.
        pki.WriteCrl(ca, "ca.crl", 2, revokedCert!, goodCert);
        using (var good = DaemonChannel.ForTcp(address, goodPem, goodKey, caPem))
            await AssertNoAnswerAsync(good);
        Assert.NotNull(crlPath);
    }

    [Fact]
    public void Tcp_without_tls_settings_is_refused_by_configuration()
    {
        var e = Assert.Throws<ArgumentException>(() => new DaemonOptions { TcpListen = "127.0.0.1:7000" }.Validate());
        Assert.Contains("mutual TLS", e.Message);
        e = Assert.Throws<ArgumentException>(() => new DaemonOptions { TcpListen = "127.0.0.1:7000", TlsCertificate = "/c", TlsKey = "/k", TlsClientCa = "/ca" }.Validate());
        Assert.Contains("TlsClients", e.Message);
    }

    /// <summary>The handshake failed: no gRPC status from the server (the client sees the connection torn down).</summary>
    private static async Task AssertNoAnswerAsync(GrpcChannel channel)
    {
        // With TLS 1.3 the client's handshake completes before the server refuses it; the client then sees the
        // connection torn down (Internal or Unavailable, depending on timing). Either way: no answer.
        var e = await Assert.ThrowsAsync<RpcException>(() => new VmService.VmServiceClient(channel).ListVmsAsync(new ListVmsRequest(), deadline: DateTime.UtcNow.AddSeconds(30)).ResponseAsync);
        Assert.Contains(e.StatusCode, new[] { StatusCode.Unavailable, StatusCode.Internal });
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
