using FireSharp.Daemon;
using FireSharp.Daemon.Auth;
using FireSharp.Kvm.Interop;
using FireSharp.Tests.Support;
using Microsoft.Extensions.Configuration;

namespace FireSharp.Tests.Api;

/// <summary>The pieces of client authorization that need no server: the role table, the options, the peer and certificate policies.</summary>
public sealed class ClientAuthorizationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fs-authz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Every service the daemon serves (DaemonHost maps exactly these).</summary>
    private static readonly Google.Protobuf.Reflection.ServiceDescriptor[] s_served =
    [
        FireSharp.Proto.V1.VmService.Descriptor, FireSharp.Proto.V1.FunctionService.Descriptor,
        Grpc.Health.V1.Health.Descriptor, Grpc.Reflection.V1Alpha.ServerReflection.Descriptor,
    ];

    [Fact]
    public void Every_method_of_every_served_service_has_a_role_and_the_table_names_no_other()
    {
        var methods = s_served.SelectMany(s => s.Methods.Select(m => $"/{s.FullName}/{m.Name}")).ToHashSet();
        Assert.True(methods.Count > 25);
        var missing = methods.Where(m => ApiRoles.Required(m) is not (ApiRole.Viewer or ApiRole.Operator or ApiRole.Admin)).ToList();
        Assert.True(missing.Count == 0, "methods without a role (nobody could call them): " + string.Join(", ", missing));
        var stale = ApiRoles.All.Keys.Where(k => !methods.Contains(k)).ToList();
        Assert.True(stale.Count == 0, "roles for methods no service has: " + string.Join(", ", stale));
        Assert.Null(ApiRoles.Required("/firesharp.v1.VmService/Unknown"));
    }

    [Theory]
    [InlineData("/firesharp.v1.VmService/ListVms", ApiRole.Viewer)]
    [InlineData("/firesharp.v1.VmService/StreamConsole", ApiRole.Viewer)]
    [InlineData("/firesharp.v1.VmService/CreateVm", ApiRole.Operator)]
    [InlineData("/firesharp.v1.VmService/Exec", ApiRole.Operator)]
    [InlineData("/firesharp.v1.FunctionService/Invoke", ApiRole.Operator)]
    [InlineData("/firesharp.v1.VmService/CreateSnapshot", ApiRole.Admin)]
    [InlineData("/firesharp.v1.VmService/RestoreVm", ApiRole.Admin)]
    [InlineData("/firesharp.v1.FunctionService/CreateFunction", ApiRole.Admin)]
    [InlineData("/firesharp.v1.FunctionService/PutFunctionConcurrency", ApiRole.Admin)]
    public void The_issue_s_roles(string method, ApiRole role) => Assert.Equal(role, ApiRoles.Required(method));

    [Fact]
    public void Allow_lists_and_socket_peers_are_read_from_configuration()
    {
        string file = Path.Combine(_dir, "config.json");
        File.WriteAllText(file, """
            { "TlsClients": ["ops.example.com=admin", "CN=odd=viewer", "spiffe://t/ci=Operator"],
              "SocketAllowedUsers": ["nobody", "1234"], "SocketAllowedGroups": "nogroup, 77" }
            """);
        var o = DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddJsonFile(file).Build());
        Assert.Equal(ApiRole.Admin, o.TlsClients["ops.example.com"]);
        Assert.Equal(ApiRole.Viewer, o.TlsClients["CN=odd"]);
        Assert.Equal(ApiRole.Operator, o.TlsClients["spiffe://t/ci"]);
        Assert.Equal([65534u, 1234u], o.SocketAllowedUids);
        Assert.Equal([65534u, 77u], o.SocketAllowedGids);

        // The command-line form: one comma-separated string.
        o = DaemonOptions.FromConfiguration(new ConfigurationBuilder().AddCommandLine(["--TlsClients=a=viewer,b=admin"]).Build());
        Assert.Equal(2, o.TlsClients.Count);
    }

    [Theory]
    [InlineData("TlsClients", "ops=opertor")]
    [InlineData("TlsClients", "ops")]
    [InlineData("TlsClients", "=admin")]
    [InlineData("TlsClients", "a=viewer,a=admin")]
    [InlineData("SocketAllowedUsers", "no-such-user-here")]
    [InlineData("SocketAllowedGroups", "no-such-group-here")]
    [InlineData("TlsClientCrl", "relative.crl")]
    public void A_mistyped_authorization_setting_is_refused_naming_its_key(string key, string value)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { [key] = value, ["TlsClientCa"] = "/ca.pem" }).Build();
        var e = Assert.Throws<ArgumentException>(() => DaemonOptions.FromConfiguration(config));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void Socket_peers_root_self_listed_users_and_group_members_are_admin_others_nothing()
    {
        var policy = new UnixPeerPolicy(new DaemonOptions { SocketAllowedUids = [1234], SocketAllowedGids = [500] });
        PeerCredentials Peer(uint uid, uint gid, params uint[] groups) => new(42, uid, gid, groups);
        Assert.Equal(ApiRole.Admin, policy.RoleOf(Peer(0, 0)));
        Assert.Equal(ApiRole.Admin, policy.RoleOf(Peer(ProcInfo.EffectiveUserId, 9999)));
        Assert.Equal(ApiRole.Admin, policy.RoleOf(Peer(1234, 9999)));
        Assert.Equal(ApiRole.Admin, policy.RoleOf(Peer(65534, 500)));
        Assert.Equal(ApiRole.Admin, policy.RoleOf(Peer(65534, 65534, 10, 500)));
        Assert.Equal(ApiRole.None, policy.RoleOf(Peer(65534, 65534, 10)));
        Assert.Equal(ApiRole.None, policy.RoleOf(null));

        // SocketGroup's members are allowed.
        policy = new UnixPeerPolicy(new DaemonOptions { SocketGroup = "nogroup" });
        Assert.Equal(ApiRole.Admin, policy.RoleOf(Peer(65534, 65534)));
        Assert.Equal(ApiRole.None, policy.RoleOf(Peer(65534, 100)));
    }

    [Fact]
    public void Certificates_issued_by_an_intermediate_under_the_ca_chain_when_the_client_sends_the_intermediate()
    {
        using var pki = new TestCertificates(_dir);
        var ca = pki.NewCa("root-ca");
        var intermediate = pki.IssueCa(ca, "team-ca");
        var deeper = pki.IssueCa(intermediate, "sub-ca");
        var tooDeep = pki.IssueCa(deeper, "sub-sub-ca");
        var leaf = pki.Issue(intermediate, "alice", "alice", [TestCertificates.ClientAuth]).Cert;
        var leaf2 = pki.Issue(deeper, "bob", "bob", [TestCertificates.ClientAuth]).Cert;
        var leaf3 = pki.Issue(tooDeep, "carol", "carol", [TestCertificates.ClientAuth]).Cert;
        var clients = new Dictionary<string, ApiRole> { ["alice"] = ApiRole.Viewer };
        using (var policy = new ClientCertificatePolicy(pki.PemOf(ca), null, clients))
        {
            Assert.True(policy.Accepts(leaf, out string why, [intermediate]), why);
            Assert.True(policy.Accepts(leaf2, out why, [deeper, intermediate]), why);
            Assert.Equal(("alice", ApiRole.Viewer), policy.RoleOf(leaf));
            // Without the intermediate there is no chain; the system store is never asked.
            Assert.False(policy.Accepts(leaf, out why));
            Assert.Contains("TlsClientCa", why);
            // A chain longer than the limit is refused.
            Assert.False(policy.Accepts(leaf3, out why, [tooDeep, deeper, intermediate]));
            Assert.Contains("at most", why);
            // The intermediate sent as a client certificate itself has no clientAuth usage of its own: refused.
            Assert.False(policy.Accepts(intermediate, out _));
        }
        // The CA's CRL revokes the intermediate, and with it everything it issued.
        string crl = pki.WriteCrl(ca, "root.crl", 1, intermediate);
        using (var policy = new ClientCertificatePolicy(pki.PemOf(ca), crl, clients))
        {
            Assert.False(policy.Accepts(leaf, out string why, [intermediate]));
            Assert.Contains("intermediate CA", why);
            Assert.Contains("revoked", why);
        }
    }

    [Fact]
    public void Certificates_need_the_ca_the_clientAuth_usage_and_no_revocation_and_names_come_from_cn_and_sans()
    {
        using var pki = new TestCertificates(_dir);
        var ca = pki.NewCa("ca");
        var other = pki.NewCa("other");
        var good = pki.Issue(ca, "good", "good", [TestCertificates.ClientAuth], dnsNames: ["good.example"], uris: ["spiffe://t/good"]).Cert;
        var both = pki.Issue(ca, "both", "both", [TestCertificates.ServerAuth, TestCertificates.ClientAuth]).Cert;
        var serverOnly = pki.Issue(ca, "srv", "srv", [TestCertificates.ServerAuth]).Cert;
        var noEku = pki.Issue(ca, "plain", "plain", []).Cert;
        var foreign = pki.Issue(other, "good", "foreign", [TestCertificates.ClientAuth]).Cert;
        var clients = new Dictionary<string, ApiRole> { ["good.example"] = ApiRole.Viewer, ["spiffe://t/good"] = ApiRole.Operator };

        using (var policy = new ClientCertificatePolicy(pki.PemOf(ca), null, clients))
        {
            Assert.True(policy.Accepts(good, out _));
            Assert.True(policy.Accepts(both, out _));
            Assert.False(policy.Accepts(serverOnly, out string why));
            Assert.Contains("clientAuth", why);
            Assert.False(policy.Accepts(noEku, out why));
            Assert.Contains("clientAuth", why);
            Assert.False(policy.Accepts(foreign, out why));
            Assert.Contains("TlsClientCa", why);
            Assert.Equal(["good", "good.example", "spiffe://t/good"], ClientCertificatePolicy.Names(good));
            Assert.Equal(("spiffe://t/good", ApiRole.Operator), policy.RoleOf(good)); // the highest role among its names
            Assert.Equal(("both", ApiRole.None), policy.RoleOf(both));
        }

        // A CRL from the CA: the revoked certificate is refused, the others pass; a rewritten CRL is read again.
        string crl = pki.WriteCrl(ca, "ca.crl", 1, both);
        using (var policy = new ClientCertificatePolicy(pki.PemOf(ca), crl, clients))
        {
            Assert.True(policy.Accepts(good, out _));
            Assert.False(policy.Accepts(both, out string why));
            Assert.Contains("revoked", why);
            pki.WriteCrl(ca, "ca.crl", 2, both, good);
            Assert.False(policy.Accepts(good, out _));
            // A CRL that stops being valid (here: signed by another CA) refuses everyone.
            pki.WriteCrl(other, "ca.crl", 3);
            Assert.False(policy.Accepts(good, out why));
            Assert.Contains("not usable", why);
        }
        // ... and one that is bad from the start stops the daemon from starting.
        var e = Assert.Throws<ArgumentException>(() => new ClientCertificatePolicy(pki.PemOf(ca), crl, clients));
        Assert.Contains("TlsClientCrl", e.Message);
        File.WriteAllText(crl, "not a CRL");
        Assert.Throws<ArgumentException>(() => new ClientCertificatePolicy(pki.PemOf(ca), crl, clients));
    }
}
