using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Karpetrack.Simulation;

/// <summary>The fake Spot API's login host, its Kubernetes-style objects (organizations, cloudspaces, server classes, regions) and the wire helpers.</summary>
public sealed partial class SpotApiServer
{
    /// <summary>A price as Go's %f prints it: six decimals.</summary>
    private static string Six(decimal d) => d.ToString("F6", CultureInfo.InvariantCulture);

    /// <summary>A price as Go's %v prints a float: no trailing zeros.</summary>
    private static string Plain(decimal d) => d.ToString("0.############", CultureInfo.InvariantCulture);

    /// <summary>A number however it was built (parsed or set); callers checked the schema, so it is one.</summary>
    private static decimal Num(JsonNode? node) =>
        decimal.TryParse(node?.ToJsonString(), NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d : 0m;

    private static string? Text(JsonNode? node) => node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    private static string TypeName(JsonNode? node) => node switch
    {
        null => "null",
        JsonObject => "object",
        JsonArray => "array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "string",
            JsonValueKind.True or JsonValueKind.False => "boolean",
            // Kubernetes' JSON decoder calls a number without fraction or exponent an integer.
            JsonValueKind.Number => v.ToJsonString().AsSpan().IndexOfAny(".eE") < 0 ? "integer" : "number",
            _ => "null",
        },
        _ => "unknown",
    };

    // ---- login host ------------------------------------------------------------------------

    private async Task Token(HttpContext ctx)
    {
        if (!ctx.Request.HasFormContentType)
        {
            await Json(ctx, 400, new JsonObject { ["error"] = "invalid_request", ["error_description"] = "Missing required parameter: grant_type" });
            return;
        }
        var form = await ctx.Request.ReadFormAsync();
        var grant = form["grant_type"].ToString();
        if (grant != "refresh_token")
        {
            await Json(ctx, 403, new JsonObject { ["error"] = "unsupported_grant_type", ["error_description"] = $"Unsupported grant type: {grant}" });
            return;
        }
        if (form["client_id"].ToString() != options.ClientId)
        {
            await Json(ctx, 401, new JsonObject { ["error"] = "access_denied", ["error_description"] = "Unauthorized" });
            return;
        }
        if (form["refresh_token"].ToString() != options.RefreshToken)
        {
            await Json(ctx, 403, new JsonObject { ["error"] = "invalid_grant", ["error_description"] = "Unknown or invalid refresh token." });
            return;
        }
        var now = clock.GetUtcNow();
        var expires = DateTimeOffset.FromUnixTimeSeconds(now.ToUnixTimeSeconds() + (long)options.TokenLifetime.TotalSeconds);
        var payload = new JsonObject
        {
            ["iss"] = "https://login.spot.rackspace.com/",
            ["sub"] = "auth0|demo",
            ["aud"] = options.ClientId,
            ["iat"] = now.ToUnixTimeSeconds(),
            ["exp"] = expires.ToUnixTimeSeconds(),
            ["email_verified"] = true,
            ["group"] = "cloudspace-admin",
        };
        if (options.OrgIdClaim) payload["org_id"] = options.Organizations[0].Id;
        var idToken = B64(Encoding.UTF8.GetBytes("""{"alg":"RS256","typ":"JWT","kid":"demo"}""")) + "." +
                      B64(Encoding.UTF8.GetBytes(payload.ToJsonString())) + "." + B64(RandomNumberGenerator.GetBytes(64));
        var accessToken = B64(RandomNumberGenerator.GetBytes(24));   // opaque, as Auth0's: no dots
        lock (gate) idTokens[idToken] = expires;
        LastIssued = new IssuedToken(accessToken, idToken, expires);
        Interlocked.Increment(ref tokenExchanges);
        await Json(ctx, 200, new JsonObject
        {
            ["access_token"] = accessToken,
            ["id_token"] = idToken,
            ["scope"] = "openid profile email offline_access",
            ["expires_in"] = (long)options.TokenLifetime.TotalSeconds,
            ["token_type"] = "Bearer",
        });
    }

    private static string B64(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    // ---- objects ---------------------------------------------------------------------------

    private JsonObject Organizations()
    {
        var list = new JsonArray();
        foreach (var o in options.Organizations)
            list.Add((JsonNode)new JsonObject { ["id"] = o.Id, ["name"] = o.Name, ["display_name"] = o.DisplayName, ["metadata"] = new JsonObject { ["namespace"] = o.Namespace } });
        return new JsonObject
        {
            ["start"] = 0, ["limit"] = 50, ["length"] = list.Count, ["total"] = list.Count, ["next"] = "", ["organizations"] = list,
        };
    }

    private JsonObject List(string kind, List<JsonObject> items)
    {
        string rv;
        lock (gate) rv = resourceVersion.ToString(CultureInfo.InvariantCulture);
        var array = new JsonArray();
        foreach (var i in items) array.Add(i.DeepClone());
        return new JsonObject
        {
            ["apiVersion"] = "ngpc.rxt.io/v1", ["kind"] = kind,
            ["metadata"] = new JsonObject { ["continue"] = "", ["resourceVersion"] = rv },
            ["items"] = array,
        };
    }

    private static Task One(HttpContext ctx, JsonObject? obj, string resource, string name) => obj is null
        ? Status(ctx, 404, "NotFound", $"{resource}.ngpc.rxt.io \"{name}\" not found")
        : Json(ctx, 200, obj.DeepClone());

    private static string? Name(JsonObject o) => (string?)o["metadata"]?["name"];

    private static string KindOf(string resource) => resource switch
    {
        "cloudspaces" => "CloudSpace",
        "spotnodepools" => "SpotNodePool",
        "ondemandnodepools" => "OnDemandNodePool",
        _ => resource,
    };

    private static Task Json(HttpContext ctx, int status, JsonNode body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        return ctx.Response.WriteAsync(body.ToJsonString());
    }

    /// <summary>A Kubernetes Status, as the apiserver behind the gateway answers errors.</summary>
    private static Task Status(HttpContext ctx, int code, string reason, string message) => Json(ctx, code, new JsonObject
    {
        ["kind"] = "Status", ["apiVersion"] = "v1", ["metadata"] = new JsonObject(),
        ["status"] = "Failure", ["message"] = message, ["reason"] = reason, ["code"] = code,
    });

    private JsonObject Meta(string name, string? ns = null)
    {
        var m = new JsonObject
        {
            ["name"] = name,
            ["uid"] = new Guid(MD5.HashData(Encoding.UTF8.GetBytes(ns + "/" + name))).ToString(),
            ["resourceVersion"] = Interlocked.Increment(ref resourceVersion).ToString(CultureInfo.InvariantCulture),
            ["generation"] = 1,
            ["creationTimestamp"] = "2024-02-01T00:00:00Z",
        };
        if (ns is not null) m["namespace"] = ns;
        return m;
    }

    private JsonObject Cloudspace(string ns, string name, string region) => new()
    {
        ["apiVersion"] = "ngpc.rxt.io/v1",
        ["kind"] = "CloudSpace",
        ["metadata"] = Meta(name, ns),
        ["spec"] = new JsonObject
        {
            ["region"] = region, ["kubernetesVersion"] = "1.31.1", ["cni"] = "calico", ["HAControlPlane"] = false,
            ["cloud"] = "default", ["deploymentType"] = "gen2", ["webhook"] = "", ["bidRequests"] = new JsonArray(), ["onDemandRequests"] = new JsonArray(),
        },
        ["status"] = new JsonObject
        {
            ["phase"] = "Ready", ["health"] = "Healthy", ["currentKubernetesVersion"] = "1.31.1",
            ["APIServerEndpoint"] = $"https://hcp-{new Guid(MD5.HashData(Encoding.UTF8.GetBytes(name))):D}.spot.rackspace.com",
            ["assignedServers"] = new JsonObject(), ["bids"] = new JsonObject(), ["pendingAllocations"] = new JsonObject(),
        },
    };

    // OpenStack flavors and on-demand $/h of the v1 classes (spot-api.md §4.3, 2024; gp.vs1.medium from a 2026 probe).
    private static readonly Dictionary<string, (string Flavor, decimal OnDemand)> KnownV1 = new(StringComparer.Ordinal)
    {
        ["gp.vs1.medium"] = ("compute1-4", 0.019m), ["gp.vs1.large"] = ("io1-15", 0.04m), ["gp.vs1.xlarge"] = ("io1-30", 0.09m),
        ["gp.vs1.2xlarge"] = ("io1-60", 0.18m), ["ch.vs1.medium"] = ("compute1-4", 0.02m), ["ch.vs1.large"] = ("compute1-8", 0.03m),
        ["ch.vs1.xlarge"] = ("compute1-15", 0.07m), ["ch.vs1.2xlarge"] = ("compute1-30", 0.13m), ["mh.vs1.medium"] = ("memory1-15", 0.03m),
        ["mh.vs1.large"] = ("memory1-30", 0.07m), ["mh.vs1.xlarge"] = ("memory1-60", 0.13m),
    };

    private static readonly Dictionary<string, (string Country, string Code)> RegionFacts = new(StringComparer.Ordinal)
    {
        ["aus-syd-1"] = ("AUS", "SYD"), ["hkg-hkg-1"] = ("HKG", "HKG"), ["uk-lon-1"] = ("GBR", "LON"), ["us-central-dfw-1"] = ("USA", "DFW"),
        ["us-central-dfw-2"] = ("USA", "DFW2"), ["us-central-ord-1"] = ("USA", "ORD"), ["us-east-iad-1"] = ("USA", "IAD"), ["us-west-sjc-1"] = ("USA", "SJC"),
    };

    /// <summary>ServerClass and Region objects from a feed snapshot, with the fields only the API has filled in.</summary>
    private static (List<JsonObject>, List<JsonObject>) BuildCatalogue(byte[] snapshot, SpotApiServer server)
    {
        var classes = new List<JsonObject>();
        var regions = new List<JsonObject>();
        using var doc = JsonDocument.Parse(snapshot);
        foreach (var region in doc.RootElement.GetProperty("regions").EnumerateObject())
        {
            var generation = region.Value.TryGetProperty("generation", out var g) ? g.GetString() ?? "v1" : "v1";
            string description = "";
            foreach (var sc in region.Value.GetProperty("serverclasses").EnumerateObject())
            {
                var e = sc.Value;
                var category = e.GetProperty("category").GetString()!;
                description = e.TryGetProperty("description", out var d) ? d.GetString() ?? "" : "";
                var cpu = e.GetProperty("cpu").GetString()!;
                var memory = e.GetProperty("memory").GetString()!;
                var market = decimal.Parse(e.GetProperty("market_price").GetString()!, CultureInfo.InvariantCulture);
                var family = sc.Name[..sc.Name.LastIndexOf('-')];
                bool bareMetal = category == "Bare Metal";
                var (flavor, onDemand) = KnownV1.TryGetValue(family, out var known)
                    ? known
                    // No source gives these: a plausible flavor name and a price of the same order as the 2024 table.
                    : (family.Replace('.', '-'), Math.Round(decimal.Parse(cpu, CultureInfo.InvariantCulture) * 0.006m
                        + (PriceFeedParser.ParseGigabytes(memory) ?? 0) / 1_000_000_000m * 0.0012m, 3));
                var spec = new JsonObject
                {
                    ["availability"] = "available",
                    ["category"] = category,
                    ["displayName"] = e.GetProperty("display_name").GetString(),
                    ["flavorType"] = bareMetal ? "baremetal" : "virtual",
                    ["onDemandPricing"] = new JsonObject { ["cost"] = onDemand.ToString(CultureInfo.InvariantCulture), ["interval"] = "1h" },
                    ["provider"] = new JsonObject { ["providerFlavorID"] = flavor, ["providerType"] = bareMetal ? "ironic" : "ospc" },
                    ["region"] = region.Name,
                    ["resources"] = new JsonObject { ["cpu"] = cpu, ["memory"] = memory, ["disk"] = bareMetal ? "960GB" : "100GB" },
                };
                // Bare metal has no reserve price: the real webhook fails to parse "" for it (Dec 2025 probe).
                // Every virtual class has the 0.01 floor of the 2026 bid rules.
                if (!bareMetal) spec["minBidPricePerHour"] = "0.01";
                var meta = server.Meta(sc.Name);
                meta["labels"] = new JsonObject { [$"region.ngpc.rxt.io/{region.Name}"] = "true" };
                classes.Add(new JsonObject
                {
                    ["apiVersion"] = "ngpc.rxt.io/v1",
                    ["kind"] = "ServerClass",
                    ["metadata"] = meta,
                    ["spec"] = spec,
                    ["status"] = new JsonObject
                    {
                        ["available"] = 0, ["capacity"] = 0, ["reserved"] = 0, ["lastAuction"] = 0,
                        ["spotPricing"] = new JsonObject
                        {
                            ["marketPricePerHour"] = market.ToString("F6", CultureInfo.InvariantCulture),
                            ["hammerPricePerHour"] = market.ToString("F6", CultureInfo.InvariantCulture),
                        },
                    },
                });
            }
            var (country, code) = RegionFacts.GetValueOrDefault(region.Name, ("USA", region.Name.ToUpperInvariant()));
            regions.Add(new JsonObject
            {
                ["apiVersion"] = "ngpc.rxt.io/v1",
                ["kind"] = "Region",
                ["metadata"] = server.Meta(region.Name),
                ["spec"] = new JsonObject
                {
                    ["country"] = country, ["description"] = description, ["generation"] = generation,
                    ["provider"] = new JsonObject { ["providerRegionName"] = code, ["providerType"] = "ospc" },
                },
            });
        }
        classes.Sort((a, b) => string.CompareOrdinal(Name(a), Name(b)));
        regions.Sort((a, b) => string.CompareOrdinal(Name(a), Name(b)));
        return (classes, regions);
    }
}
