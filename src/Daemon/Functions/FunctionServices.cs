using FireSharp.Daemon.Metrics;
using FireSharp.Daemon.Vms;
using FireSharp.Pool;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FireSharp.Daemon.Functions;

/// <summary>Wires functions into the daemon: the pool, its VM factory, the manager, the gRPC service and start-up/shutdown.</summary>
public static class FunctionServices
{
    /// <summary>FunctionService's gRPC message limit: a 6 MB payload and the rest of the message.</summary>
    public const int MaxMessageBytes = FunctionValidator.MaxPayloadBytes + (1 << 20);

    /// <param name="factory">The VM factory; null = <see cref="AgentFunctionVmFactory"/> over the daemon's <see cref="VmManager"/>.</param>
    public static IServiceCollection AddFunctions(this IServiceCollection services, DaemonOptions options, Func<IServiceProvider, IFunctionVmFactory>? factory = null)
    {
        services.AddSingleton<FunctionMetrics>();
        services.AddSingleton<InvocationLogs>();
        services.AddSingleton(sp => new PoolOptions
        {
            AccountConcurrencyLimit = options.FunctionConcurrencyLimit,
            UnreservedMinimum = Math.Min(100, options.FunctionConcurrencyLimit),
            Observer = new InvocationObservers(sp.GetRequiredService<FunctionMetrics>(), sp.GetRequiredService<InvocationLogs>()),
        });
        services.AddSingleton(factory ?? (sp => new AgentFunctionVmFactory(sp.GetRequiredService<VmManager>(), options,
            sp.GetRequiredService<ILogger<AgentFunctionVmFactory>>())));
        services.AddSingleton(sp =>
        {
            var pool = new FunctionPool(sp.GetRequiredService<IFunctionVmFactory>(), sp.GetRequiredService<PoolOptions>(),
                sp.GetRequiredService<ILogger<FunctionPool>>());
            sp.GetRequiredService<FunctionMetrics>().Observe(pool);
            return pool;
        });
        services.AddSingleton(sp => new FunctionStore(options.FunctionsDir, sp.GetRequiredService<ILogger<FunctionStore>>()));
        services.AddSingleton<FunctionRecords>();
        services.AddSingleton<FunctionManager>();
        // Lambda takes payloads of up to 6 MB (gRPC's default limit is 4 MiB): room for them plus the envelope.
        services.AddGrpc().AddServiceOptions<FunctionGrpcService>(o =>
        {
            o.MaxReceiveMessageSize = MaxMessageBytes;
            o.MaxSendMessageSize = MaxMessageBytes;
        });
        services.AddHostedService<FunctionStartup>();
        return services;
    }

    public static IEndpointRouteBuilder MapFunctions(this IEndpointRouteBuilder app)
    {
        app.MapGrpcService<FunctionGrpcService>();
        return app;
    }
}

/// <summary>
/// At start (after the VM manager has loaded its state): removes function VMs an earlier daemon left, then loads the
/// stored functions. At stop (before the VM manager goes): shuts every function VM down.
/// </summary>
public sealed class FunctionStartup(FunctionManager manager, IFunctionVmFactory factory) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (factory is AgentFunctionVmFactory real) await real.RemoveOrphansAsync(cancellationToken).ConfigureAwait(false);
        await manager.LoadAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task StopAsync(CancellationToken cancellationToken) =>
        await manager.Pool.DisposeAsync().ConfigureAwait(false);
}
