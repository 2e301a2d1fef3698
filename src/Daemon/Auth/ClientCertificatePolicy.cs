using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Org.BouncyCastle.Asn1.X509;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.X509;
using BcCertificate = Org.BouncyCastle.X509.X509Certificate;

namespace FireSharp.Daemon.Auth;

/// <summary>
/// TCP clients: which certificates complete the TLS handshake, and what role each identity has.
/// A certificate is accepted when it was issued directly by TlsClientCa (the system store is never consulted),
/// carries the clientAuth extended key usage (1.3.6.1.5.5.7.3.2; a certificate without an EKU extension is
/// refused too), and, when TlsClientCrl is set, is not on that CRL. The CRL must be signed by TlsClientCa; it is
/// re-read when the file changes, and a CRL that cannot be read or whose signature fails refuses every client
/// (fail closed). .NET on Linux only reads CRLs from its own download cache, so the file is parsed and checked
/// with BouncyCastle. The role comes from TlsClients: the subject CN and every DNS, URI and e-mail SAN is looked
/// up (exact, case-sensitive); the highest role found wins.
/// </summary>
public sealed class ClientCertificatePolicy : IDisposable
{
    public const string ClientAuthOid = "1.3.6.1.5.5.7.3.2";

    private readonly X509Certificate2 _ca;
    private readonly BcCertificate _caBc;
    private readonly string? _crlPath;
    private readonly IReadOnlyDictionary<string, ApiRole> _clients;
    private readonly Lock _crlLock = new();
    private (DateTime Mtime, long Length, X509Crl? Crl, string? Error) _crl;

    public ClientCertificatePolicy(string caPem, string? crlPath, IReadOnlyDictionary<string, ApiRole> clients)
    {
        _ca = X509CertificateLoader.LoadCertificateFromFile(caPem);
        _caBc = DotNetUtilities.FromX509Certificate(_ca);
        _crlPath = crlPath;
        _clients = clients;
        if (_crlPath is not null && CurrentCrl(out string? error) is null)
            throw new ArgumentException($"configuration TlsClientCrl='{_crlPath}': {error}");
    }

    public static ClientCertificatePolicy From(DaemonOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new ClientCertificatePolicy(options.TlsClientCa ?? throw new ArgumentException("TlsClientCa is not set"), options.TlsClientCrl, options.TlsClients);
    }

    /// <summary>The longest chain accepted: the client's certificate, up to two intermediate CAs, and TlsClientCa.</summary>
    public const int MaxChainLength = 4;

    /// <summary>
    /// Whether the certificate may complete the handshake; <paramref name="reason"/> says why not.
    /// <paramref name="presented"/>: the other certificates the client sent in the handshake, from which intermediate
    /// CAs between its certificate and TlsClientCa are taken (TlsClientCa stays the only trust anchor).
    /// </summary>
    public bool Accepts(X509Certificate2 certificate, out string reason, X509Certificate2Collection? presented = null)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (!HasClientAuth(certificate))
        {
            reason = "the certificate does not carry the clientAuth extended key usage";
            return false;
        }
        byte[] issuedByCa;
        using (var chain = new X509Chain())
        {
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(_ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck; // the CRL is checked below, from the file
            chain.ChainPolicy.ApplicationPolicy.Add(new Oid(ClientAuthOid));
            if (presented is not null) chain.ChainPolicy.ExtraStore.AddRange(presented);
            if (!chain.Build(certificate))
            {
                reason = "the certificate does not chain to TlsClientCa: " + string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()));
                return false;
            }
            int length = chain.ChainElements.Count;
            if (length < 2 || length > MaxChainLength || !chain.ChainElements[length - 1].Certificate.RawDataMemory.Span.SequenceEqual(_ca.RawDataMemory.Span))
            {
                reason = $"the certificate's chain to TlsClientCa has {length} certificates (at most {MaxChainLength}: the client's, two intermediate CAs, TlsClientCa)";
                return false;
            }
            // The CRL is TlsClientCa's: it revokes what the CA issued itself, which is the certificate directly
            // under it in the chain (the client's own, or the top intermediate CA, revoking everything below it).
            issuedByCa = chain.ChainElements[length - 2].Certificate.RawData;
        }
        if (_crlPath is not null)
        {
            var crl = CurrentCrl(out string? error);
            if (crl is null)
            {
                reason = $"the CRL {_crlPath} is not usable ({error}): every client is refused";
                return false;
            }
            var revocable = new X509CertificateParser().ReadCertificate(issuedByCa);
            if (crl.IsRevoked(revocable))
            {
                reason = issuedByCa.AsSpan().SequenceEqual(certificate.RawDataMemory.Span)
                    ? $"the certificate (serial {certificate.SerialNumber}) is revoked by {_crlPath}"
                    : $"the certificate's intermediate CA {revocable.SubjectDN} (serial {revocable.SerialNumber.ToString(16)}) is revoked by {_crlPath}";
                return false;
            }
        }
        reason = "";
        return true;
    }

    /// <summary>The identity names of a certificate: its subject CN, then its DNS, URI and e-mail SANs.</summary>
    public static IReadOnlyList<string> Names(X509Certificate2 certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        var bc = DotNetUtilities.FromX509Certificate(certificate);
        var names = new List<string>(bc.SubjectDN.GetValueList(X509Name.CN));
        foreach (var san in bc.GetSubjectAlternativeNames() ?? [])
            if (san.Count == 2 && san[0] is int type && type is GeneralName.DnsName or GeneralName.UniformResourceIdentifier or GeneralName.Rfc822Name
                && san[1] is string value)
                names.Add(value);
        return names;
    }

    /// <summary>The role of an accepted certificate, and the name that gave it (the CN when none did).</summary>
    public (string Identity, ApiRole Role) RoleOf(X509Certificate2 certificate)
    {
        var names = Names(certificate);
        (string Identity, ApiRole Role) best = (names.Count > 0 ? names[0] : certificate.Subject, ApiRole.None);
        foreach (var name in names)
            if (_clients.TryGetValue(name, out var role) && role > best.Role) best = (name, role);
        return best;
    }

    private static bool HasClientAuth(X509Certificate2 certificate) =>
        certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().Any(e => e.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == ClientAuthOid));

    /// <summary>The CRL as the file now is (re-read when its mtime or size changed); null with the reason when it is not usable.</summary>
    private X509Crl? CurrentCrl(out string? error)
    {
        lock (_crlLock)
        {
            var info = new FileInfo(_crlPath!);
            DateTime mtime = info.Exists ? info.LastWriteTimeUtc : DateTime.MinValue;
            long length = info.Exists ? info.Length : -1;
            if (_crl.Crl is null && _crl.Error is null || _crl.Mtime != mtime || _crl.Length != length)
                _crl = (mtime, length, Load(_crlPath!, _caBc, out string? loadError), loadError);
            error = _crl.Error;
            return _crl.Crl;
        }
    }

    /// <summary>Reads a PEM or DER CRL and checks that TlsClientCa issued and signed it.</summary>
    private static X509Crl? Load(string path, BcCertificate ca, out string? error)
    {
        try
        {
            var crl = new X509CrlParser().ReadCrl(File.ReadAllBytes(path));
            if (crl is null)
            {
                error = "no CRL in the file";
                return null;
            }
            if (!crl.IssuerDN.Equivalent(ca.SubjectDN))
            {
                error = $"issued by {crl.IssuerDN}, not by TlsClientCa ({ca.SubjectDN})";
                return null;
            }
            crl.Verify(ca.GetPublicKey());
            error = null;
            return crl;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidKeyException or SignatureException or GeneralSecurityException
            or Org.BouncyCastle.Security.Certificates.CrlException or ArgumentException or InvalidOperationException)
        {
            error = e.Message;
            return null;
        }
    }

    public void Dispose() => _ca.Dispose();
}
