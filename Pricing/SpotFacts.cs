using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// Facts about a class read from the authenticated Spot API (ServerClasses). A class without a
/// minimum bid cannot be bid on: the admission webhook then rejects every bid (bare metal, §2.6).
/// </summary>
public sealed record SpotClassFacts(decimal? MinBid, decimal? OnDemand, long? DiskBytes, string? Availability, decimal? Market, ServerClass? Class);

/// <summary>
/// Reads the server classes every few minutes and hands their facts (minimum bid, on-demand
/// price, disk, availability) to the price feed; on failure records why and keeps the last facts.
/// </summary>
public sealed class SpotPricing(SpotApiClient client, PriceFeed prices, ILogger log, string? cloudspace = null, TimeSpan? refresh = null, TimeProvider? clock = null)
{
    private readonly TimeSpan refresh = refresh ?? TimeSpan.FromMinutes(10);
    private readonly TimeProvider clock = clock ?? TimeProvider.System;
    private volatile string? region;

    /// <summary>The cloudspace's region once read: what the recommender may price and propose.</summary>
    public string? Region => region;

    /// <summary>Items the last list could not read.</summary>
    public int LastSkipped { get; private set; }

    /// <summary>One read of the cloudspace's region and the server-class facts; any end but cancellation settles the Spot part of the price book.</summary>
    public async Task<bool> RefreshAsync(CancellationToken ct)
    {
        try { return await ReadAsync(ct).ConfigureAwait(false); }
        finally { if (!ct.IsCancellationRequested) prices.SpotFactsSettled(); }
    }

    private async Task<bool> ReadAsync(CancellationToken ct)
    {
        if (cloudspace is not null && region is null)
        {
            try
            {
                var cs = await client.GetCloudspaceAsync(cloudspace, ct).ConfigureAwait(false);
                region = cs.Region;
                log.LogInformation("cloudspace {Cloudspace} is in region {Region}", cs.Name, cs.Region);
            }
            catch (SpotApiException e)
            {
                // Prices are still worth reading without the region; try the cloudspace again next round.
                Record(e, $"cloudspace {cloudspace}");
            }
        }
        try
        {
            var list = await client.ListServerClassesAsync(ct).ConfigureAwait(false);
            LastSkipped = list.Skipped;
            if (list.Items.Count == 0)
            {
                prices.RecordError("spot_api", "malformed");
                log.LogWarning("Spot API listed no readable server class ({Skipped} skipped); keeping the last facts", list.Skipped);
                return false;
            }
            if (list.Skipped > 0) log.LogWarning("Spot API: {Skipped} server classes could not be read and were skipped", list.Skipped);
            prices.SetSpotFacts(list.ToFacts());
            log.LogInformation("Spot API: facts of {Count} server classes merged into the price book", list.Items.Count);
            return true;
        }
        catch (SpotApiException e)
        {
            Record(e, "server classes");
            return false;
        }
    }

    private void Record(SpotApiException e, string what)
    {
        var reason = PriceFeed.ErrorReasons.Contains(e.Reason) ? e.Reason : "http";
        prices.RecordError("spot_api", reason);
        log.LogWarning("Spot API {What}: {Error}; keeping the last facts", what, e.Message);
    }

    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try { await RefreshAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { return; }
            try { await Task.Delay(refresh, clock, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
        }
    }
}
