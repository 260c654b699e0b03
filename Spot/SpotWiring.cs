using Karpetrack.Simulation;
using Microsoft.Extensions.Logging;

namespace Karpetrack;

/// <summary>
/// The Spot API part of the composition root: a client only when a refresh token is given (or in
/// --demo, against the embedded fake Spot API), and the loop merging server-class facts into prices.
/// </summary>
public sealed class SpotWiring : IDisposable
{
    public const string RefreshTokenVariable = "RACKSPACE_SPOT_REFRESH_TOKEN";

    private SpotWiring(SpotApiClient client, SpotPricing pricing, string? cloudspace)
    {
        Cloudspace = cloudspace;
        Client = client;
        Pricing = pricing;
    }

    public SpotApiClient Client { get; }
    public SpotPricing Pricing { get; }
    /// <summary>The cloudspace priced for and acted in (--cloudspace; "demo" in --demo).</summary>
    public string? Cloudspace { get; }

    public static SpotWiring? Create(KarpetrackOptions options, PriceFeed prices, ILoggerFactory loggers, Telemetry telemetry, DemoWiring? demo = null)
    {
        var refreshToken = Environment.GetEnvironmentVariable(RefreshTokenVariable);
        var apiOptions = options.SpotApi with { ApiUrl = options.SpotApiUrl, AuthUrl = options.SpotAuthUrl, Org = options.SpotOrg };
        var cloudspace = options.Cloudspace;
        if (demo is not null)
        {
            apiOptions = demo.SpotApiOptions(apiOptions);
            refreshToken = SpotApiServer.DemoRefreshToken;
            cloudspace = "demo";
        }
        if (string.IsNullOrWhiteSpace(refreshToken)) return null;
        var client = new SpotApiClient(apiOptions, refreshToken, loggers.CreateLogger("spot-api"), telemetry: telemetry);
        // The first plan waits for the Spot API's facts (minimum bids, availability) as well as for the feed.
        prices.ExpectSpotFacts();
        var pricing = new SpotPricing(client, prices, loggers.CreateLogger("spot-pricing"), cloudspace);
        return new SpotWiring(client, pricing, cloudspace);
    }

    public void Dispose() => Client.Dispose();
}
