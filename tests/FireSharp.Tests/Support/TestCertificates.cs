using System.Net;
using System.Numerics;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace FireSharp.Tests.Support;

/// <summary>A throw-away PKI for the mTLS tests: a CA, certificates it issues (PEM files in a directory), and CRLs.</summary>
internal sealed class TestCertificates(string dir) : IDisposable
{
    public const string ServerAuth = "1.3.6.1.5.5.7.3.1", ClientAuth = "1.3.6.1.5.5.7.3.2";

    private readonly Dictionary<string, X509Certificate2> _cas = [];
    private readonly List<X509Certificate2> _issued = [];

    public string Dir => dir;

    /// <summary>A self-signed CA (kept for issuing); its certificate is written to name.pem.</summary>
    public X509Certificate2 NewCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        var ca = req.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        _cas[name] = ca;
        Write(name + ".pem", ca.ExportCertificatePem());
        return ca;
    }

    /// <summary>An intermediate CA issued by <paramref name="parent"/> (kept for issuing; written to name.pem).</summary>
    public X509Certificate2 IssueCa(X509Certificate2 parent, string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
        req.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(req.PublicKey, false));
        using var cert = req.Create(parent, DateTimeOffset.UtcNow.AddMinutes(-2), DateTimeOffset.UtcNow.AddHours(20), RandomNumberGenerator.GetBytes(8));
        var ca = cert.CopyWithPrivateKey(key);
        _cas[name] = ca;
        Write(name + ".pem", ca.ExportCertificatePem());
        return ca;
    }

    public string PemOf(X509Certificate2 ca) => Path.Combine(dir, ca.GetNameInfo(X509NameType.SimpleName, false) + ".pem");

    /// <summary>
    /// A certificate for CN=<paramref name="name"/> from <paramref name="ca"/>, with the given EKUs (none: no EKU
    /// extension) and DNS/URI SANs; written as file.pem and file.key. Returns the certificate and the two paths.
    /// </summary>
    public (X509Certificate2 Cert, string CertPem, string KeyPem) Issue(X509Certificate2 ca, string name, string file, string[] ekus,
        string[]? dnsNames = null, string[]? uris = null, bool serverSan = false)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var req = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        req.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        if (ekus.Length > 0)
        {
            var oids = new OidCollection();
            foreach (var e in ekus) oids.Add(new Oid(e));
            req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(oids, false));
        }
        var san = new SubjectAlternativeNameBuilder();
        bool any = false;
        foreach (var d in dnsNames ?? []) { san.AddDnsName(d); any = true; }
        foreach (var u in uris ?? []) { san.AddUri(new Uri(u)); any = true; }
        if (serverSan)
        {
            san.AddDnsName("localhost");
            san.AddIpAddress(IPAddress.Loopback);
            any = true;
        }
        if (any) req.CertificateExtensions.Add(san.Build());
        using var cert = req.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-1), DateTimeOffset.UtcNow.AddHours(12), RandomNumberGenerator.GetBytes(8));
        var withKey = cert.CopyWithPrivateKey(key);
        _issued.Add(withKey);
        return (withKey, Write(file + ".pem", cert.ExportCertificatePem()), Write(file + ".key", key.ExportPkcs8PrivateKeyPem()));
    }

    /// <summary>A CRL signed by <paramref name="ca"/> revoking <paramref name="revoked"/>, written (PEM) to file.</summary>
    public string WriteCrl(X509Certificate2 ca, string file, BigInteger number, params X509Certificate2[] revoked)
    {
        var builder = new CertificateRevocationListBuilder();
        foreach (var c in revoked) builder.AddEntry(c, DateTimeOffset.UtcNow.AddMinutes(-1));
        byte[] der = builder.Build(ca, number, DateTimeOffset.UtcNow.AddDays(1), HashAlgorithmName.SHA256, thisUpdate: DateTimeOffset.UtcNow.AddMinutes(-1));
        string path = Path.Combine(dir, file);
        File.WriteAllText(path + ".tmp", PemEncoding.WriteString("X509 CRL", der));
        File.Move(path + ".tmp", path, overwrite: true);
        // The policy re-reads on a changed mtime or size: make sure a rewrite within the same tick is seen.
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddSeconds((double)number));
        return path;
    }

    private string Write(string name, string text)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    public void Dispose()
    {
        foreach (var c in _cas.Values) c.Dispose();
        foreach (var c in _issued) c.Dispose();
    }
}
