using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace FireSharp.Tests.Support;

/// <summary>
/// A Prometheus client for tests: scrapes an exposition over plain HTTP, checks it with <c>promtool check metrics</c>
/// (Debian's prometheus package, installed by `make deps`), and reads samples out of it.
/// </summary>
public static class Prometheus
{
    public const string Promtool = "/usr/bin/promtool";

    /// <summary>A TCP port nobody listens on now (bound and released).</summary>
    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public static async Task<HttpResponseMessage> GetAsync(int port, string path, HttpMethod? method = null)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        using var request = new HttpRequestMessage(method ?? HttpMethod.Get, $"http://127.0.0.1:{port}{path}");
        return await http.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(60));
    }

    /// <summary>GET /metrics: the body of a 200 answer in the text exposition format.</summary>
    public static async Task<string> ScrapeAsync(int port)
    {
        using var response = await GetAsync(port, "/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType ?? "", StringComparison.Ordinal);
        return await response.Content.ReadAsStringAsync();
    }

    /// <summary>
    /// Scrapes until <paramref name="vmId"/>'s device series are in (at most 30 s): they come from the VM's worker,
    /// which the daemon asks at scrape time with a short timeout, so on a loaded host the first scrapes may not have
    /// them yet (a Prometheus server scrapes again; so does this).
    /// </summary>
    public static async Task<string> ScrapeWithDevicesOfAsync(int port, string vmId)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            string body = await ScrapeAsync(port);
            if (Samples(body, "firesharp_vm_kvm_exits_total", $"vm_id=\"{vmId}\"").Count > 0 || DateTime.UtcNow > deadline) return body;
            await Task.Delay(250);
        }
    }

    /// <summary>
    /// Runs promtool check metrics on <paramref name="exposition"/> and asserts it found no problem (exit 0, no output).
    /// Without promtool: skipped, or a failure under FIRESHARP_REQUIRE_KVM=1 (CI installs it with `make deps`).
    /// </summary>
    public static async Task CheckAsync(string exposition)
    {
        if (!File.Exists(Promtool))
        {
            if (KvmTestSupport.Required) throw new InvalidOperationException($"FIRESHARP_REQUIRE_KVM=1 but {Promtool} is missing (make deps installs the prometheus package)");
            Skip.If(true, $"{Promtool} is missing (make deps installs the prometheus package)");
        }
        var psi = new ProcessStartInfo(Promtool) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("check");
        psi.ArgumentList.Add("metrics");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.StandardInput.WriteAsync(exposition);
        p.StandardInput.Close();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        string output = (await stdout) + (await stderr);
        Assert.True(p.ExitCode == 0 && output.Trim().Length == 0, $"promtool check metrics: exit {p.ExitCode}: {output}");
    }

    /// <summary>
    /// The values of the samples named <paramref name="name"/> whose labels include every one of <paramref name="labels"/>
    /// (each as <c>key="value"</c>).
    /// </summary>
    public static IReadOnlyList<double> Samples(string exposition, string name, params string[] labels)
    {
        var values = new List<double>();
        foreach (var line in exposition.Split('\n'))
        {
            if (line.StartsWith('#') || !line.StartsWith(name, StringComparison.Ordinal)) continue;
            var rest = line.AsSpan(name.Length);
            if (rest.Length == 0 || (rest[0] != '{' && rest[0] != ' ')) continue; // a longer name
            string labelText = rest[0] == '{' ? rest[1..rest.IndexOf('}')].ToString() : "";
            if (!labels.All(l => labelText.Split(',').Contains(l))) continue;
            var valueText = rest[(rest.IndexOf(rest[0] == '{' ? '}' : ' ') + 1)..].Trim().ToString().Split(' ')[0];
            values.Add(double.Parse(valueText, NumberStyles.Float, CultureInfo.InvariantCulture));
        }
        return values;
    }

    /// <summary>The one sample named <paramref name="name"/> with <paramref name="labels"/>.</summary>
    public static double One(string exposition, string name, params string[] labels)
    {
        var found = Samples(exposition, name, labels);
        Assert.True(found.Count == 1, $"{found.Count} samples of {name}{{{string.Join(',', labels)}}} in:\n{exposition}");
        return found[0];
    }
}
