namespace Karpetrack;

/// <summary>
/// Where the Spot refresh token and the access tokens it buys may be sent: https anywhere, plain http
/// only to this machine (the demo's and the tests' fake Spot API listen on loopback). Anything else would
/// put the refresh token, which never expires on its own, on the wire in cleartext.
/// </summary>
public static class SpotUrls
{
    /// <summary>Null when <paramref name="url"/> may carry the tokens, else why not (one line).</summary>
    public static string? Problem(Uri url) => url switch
    {
        { IsAbsoluteUri: false } => "is not an absolute URL",
        { Scheme: "https" } => null,
        { Scheme: "http", IsLoopback: true } => null,
        { Scheme: "http" } => "is plain http: the Spot refresh token would travel in cleartext (use https; http is allowed only on loopback)",
        _ => "is not an http(s) URL",
    };

    /// <summary>Throws <see cref="ArgumentException"/> naming <paramref name="what"/> when the URL may not carry the tokens.</summary>
    public static void Require(Uri url, string what)
    {
        if (Problem(url) is { } problem) throw new ArgumentException($"{what} \"{url}\" {problem}", what);
    }
}
