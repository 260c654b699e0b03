using System.Net;
using System.Net.Http.Headers;
using System.Text.RegularExpressions;

namespace Karpetrack.Tests.Api;

/// <summary>The web view's assets as served: embedded, self-contained, relative, cached by ETag.</summary>
public class WebViewTests(ApiDemoService demo) : IClassFixture<ApiDemoService>
{
    [Fact]
    public async Task ThePageAndItsAssetsAreServedWithAPolicyThatAllowsNothingFromElsewhere()
    {
        foreach (var (path, type) in new[] { ("/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css") })
        {
            using var response = await demo.Http.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(type, response.Content.Headers.ContentType?.MediaType);
            var policy = response.Headers.GetValues("Content-Security-Policy").Single();
            Assert.Contains("default-src 'none'", policy);
            Assert.Contains("script-src 'self'", policy);
            Assert.DoesNotContain("unsafe", policy);
            Assert.Equal("nosniff", response.Headers.GetValues("X-Content-Type-Options").Single());
        }
    }

    [Fact]
    public async Task EveryUrlInThePageAndScriptIsRelativeSoThatASubPathProxyWorks()
    {
        var page = await demo.Http.GetStringAsync("/");
        var script = await demo.Http.GetStringAsync("/ui/app.js");
        var css = await demo.Http.GetStringAsync("/ui/app.css");
        var urls = Regex.Matches(page, "(?:href|src)=\"([^\"]*)\"").Select(m => m.Groups[1].Value).ToList();
        Assert.Contains("ui/app.js", urls);
        Assert.Contains("metrics", urls);
        Assert.All(urls, u => Assert.False(u.StartsWith('/') || u.Contains("//"), $"not relative: {u}"));
        // The script fetches only the JSON API, by relative paths; nothing names another host.
        var fetched = Regex.Matches(script, @"api\(\s*[`'""]([^`'""]*)").Select(m => m.Groups[1].Value).ToList();
        Assert.NotEmpty(fetched);
        Assert.All(fetched, u => Assert.StartsWith("v1/", u));
        foreach (var text in new[] { page, script, css })
        {
            Assert.DoesNotContain("http://", text);
            Assert.DoesNotContain("https://", text);
            Assert.DoesNotContain("@import", text);
        }
        // No inline script (the policy would block it) and a page weight that stays small.
        Assert.DoesNotMatch("<script(?![^>]*src=)", page);
        Assert.True(page.Length + script.Length + css.Length < 64 * 1024, $"the page weighs {page.Length + script.Length + css.Length} bytes");
    }

    [Fact]
    public async Task AssetsAreGzippedAndRevalidatedByETag()
    {
        using var first = new HttpRequestMessage(HttpMethod.Get, "/ui/app.js");
        first.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("gzip"));
        using var zipped = await demo.Http.SendAsync(first);
        Assert.Equal(["gzip"], zipped.Content.Headers.ContentEncoding);
        var etag = zipped.Headers.ETag!;
        using var again = new HttpRequestMessage(HttpMethod.Get, "/ui/app.js");
        again.Headers.IfNoneMatch.Add(etag);
        using var notModified = await demo.Http.SendAsync(again);
        Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
        using var post = await demo.Http.PostAsync("/", new StringContent(""));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, post.StatusCode);
        using var missing = await demo.Http.GetAsync("/ui/nothing.js");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }
}
