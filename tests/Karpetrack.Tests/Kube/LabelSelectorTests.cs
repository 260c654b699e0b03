using System.Text.Json;

namespace Karpetrack.Tests.Kube;

/// <summary>
/// Spec tables for <see cref="LabelSelector"/>: the product (budgets, anti-affinity, node affinity, --node-selector)
/// and the embedded API server share it, so each row states what Kubernetes answers (apimachinery's labels and
/// metav1.LabelSelectorAsSelector, the scheduler's node affinity) and the code must agree.
/// </summary>
public class LabelSelectorTests
{
    private static readonly Dictionary<string, string> Pod = new() { ["app"] = "web", ["tier"] = "db", ["gen"] = "3" };

    private static readonly Dictionary<string, string> Node = new()
    {
        ["kubernetes.io/hostname"] = "node-a", ["zone"] = "iad-1", ["gen"] = "3", ["arch"] = "amd64",
    };

    private static LabelSelector FromJson(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return LabelSelector.FromJson(doc.RootElement);
    }

    private static LabelSelector Term(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return LabelSelector.FromNodeSelectorTerm(doc.RootElement);
    }

    private static string Expr(string key, string op, params string[] values) =>
        $$"""{"key":"{{key}}","operator":"{{op}}","values":[{{string.Join(",", values.Select(v => $"\"{v}\""))}}]}""";

    private static string Exprs(params string[] expressions) => $$"""{"matchExpressions":[{{string.Join(",", expressions)}}]}""";

    // ---- metav1.LabelSelector (PodDisruptionBudget policy/v1, pod anti-affinity terms) --------------------------

    [Theory]
    // Empty and null, as policy/v1 defines them: an empty selector selects every pod, a null one none.
    [InlineData("{}", true)]
    [InlineData("null", false)]
    [InlineData("\"app=web\"", false)]                                     // not a selector object at all: none
    [InlineData("""{"matchLabels":{}}""", true)]                          // no requirement is still empty
    [InlineData("""{"matchExpressions":[]}""", true)]
    [InlineData("""{"matchLabels":{},"matchExpressions":[]}""", true)]
    // matchLabels: each key must be present with that value; the keys are ANDed.
    [InlineData("""{"matchLabels":{"app":"web"}}""", true)]
    [InlineData("""{"matchLabels":{"app":"api"}}""", false)]
    [InlineData("""{"matchLabels":{"canary":"true"}}""", false)]
    [InlineData("""{"matchLabels":{"app":"web","tier":"db"}}""", true)]
    [InlineData("""{"matchLabels":{"app":"web","tier":"cache"}}""", false)]
    [InlineData("""{"matchLabels":{"app":""}}""", false)]                  // the empty value is a value: app=web is not it
    public void MetaSelectorEmptyNullAndMatchLabels(string json, bool matches) =>
        Assert.Equal(matches, FromJson(json).Matches(Pod));

    public static TheoryData<string, bool> Expressions => new()
    {
        // In: the label is present with one of the values.
        { Exprs(Expr("tier", "In", "db", "cache")), true },
        { Exprs(Expr("tier", "In", "cache")), false },
        { Exprs(Expr("canary", "In", "true")), false },
        // NotIn: the label is absent, or present with none of the values.
        { Exprs(Expr("tier", "NotIn", "cache")), true },
        { Exprs(Expr("tier", "NotIn", "db")), false },
        { Exprs(Expr("canary", "NotIn", "true")), true },
        // Exists and DoesNotExist look at the key only.
        { Exprs(Expr("tier", "Exists")), true },
        { Exprs(Expr("canary", "Exists")), false },
        { Exprs(Expr("canary", "DoesNotExist")), true },
        { Exprs(Expr("tier", "DoesNotExist")), false },
        // Expressions are ANDed with each other and with matchLabels.
        { Exprs(Expr("tier", "Exists"), Expr("app", "In", "web")), true },
        { Exprs(Expr("tier", "Exists"), Expr("app", "In", "api")), false },
        { """{"matchLabels":{"app":"web"},"matchExpressions":[""" + Expr("tier", "NotIn", "db") + "]}", false },
        { """{"matchLabels":{"app":"web"},"matchExpressions":[""" + Expr("tier", "In", "db") + "]}", true },
        // What LabelSelectorAsSelector refuses converts to no selector: the budget or term selects nothing.
        { Exprs(Expr("tier", "In")), false },                              // In needs values
        { Exprs(Expr("canary", "NotIn")), false },                         // NotIn needs values (vacuously true if read naively)
        { Exprs(Expr("tier", "Exists", "db")), false },                    // Exists takes no values
        { Exprs(Expr("canary", "DoesNotExist", "x")), false },             // DoesNotExist takes no values
        { Exprs(Expr("gen", "Gt", "1")), false },                          // Gt and Lt are node selector operators only
        { Exprs(Expr("gen", "Lt", "9")), false },
        { Exprs(Expr("tier", "Equals", "db")), false },                    // not an operator of the API
        { Exprs(Expr("tier", "in", "db")), false },                        // operators are case-sensitive
        { Exprs("""{"key":"tier","values":["db"]}"""), false },           // no operator
        { Exprs(Expr("tier", "Exists"), Expr("app", "Bogus", "web")), false },   // one invalid requirement voids the selector
    };

    [Theory]
    [MemberData(nameof(Expressions))]
    public void MetaSelectorExpressions(string json, bool matches) => Assert.Equal(matches, FromJson(json).Matches(Pod));

    [Fact]
    public void EverythingAndNothing()
    {
        Assert.True(LabelSelector.Everything.Matches(Pod));
        Assert.True(LabelSelector.Everything.Matches(new Dictionary<string, string>()));
        Assert.True(LabelSelector.Everything.IsEmpty);
        Assert.False(LabelSelector.Nothing.Matches(Pod));
        Assert.False(LabelSelector.Nothing.Matches(new Dictionary<string, string>()));
        Assert.False(LabelSelector.Nothing.IsEmpty);
        Assert.True(FromJson("{}").IsEmpty);
        Assert.False(FromJson("null").IsEmpty);
    }

    [Fact]
    public void TheSameSelectorWrittenTwoWaysPrintsTheSame()
    {
        // matchLabels in key order, as upstream sorts them: the anti-affinity group key depends on it.
        Assert.Equal(FromJson("""{"matchLabels":{"b":"2","a":"1"}}""").ToString(), FromJson("""{"matchLabels":{"a":"1","b":"2"}}""").ToString());
        Assert.Equal("a=1,b=2", FromJson("""{"matchLabels":{"b":"2","a":"1"}}""").ToString());
    }

    // ---- node selector terms (required node affinity) ----------------------------------------------------------

    public static TheoryData<string, bool> NodeTerms => new()
    {
        // A term with neither matchExpressions nor matchFields selects no node.
        { "{}", false },
        { """{"matchExpressions":[]}""", false },
        { """{"matchExpressions":[],"matchFields":[]}""", false },
        // The four label operators, as for label selectors.
        { Exprs(Expr("zone", "In", "iad-1", "dfw-1")), true },
        { Exprs(Expr("zone", "In", "dfw-1")), false },
        { Exprs(Expr("zone", "NotIn", "dfw-1")), true },
        { Exprs(Expr("gpu", "NotIn", "a100")), true },
        { Exprs(Expr("zone", "Exists")), true },
        { Exprs(Expr("gpu", "DoesNotExist")), true },
        { Exprs(Expr("gpu", "Exists")), false },
        // Gt and Lt: the label and the one value both parse as integers (strconv.ParseInt, base 10, signed).
        { Exprs(Expr("gen", "Gt", "2")), true },
        { Exprs(Expr("gen", "Gt", "3")), false },                          // strictly greater
        { Exprs(Expr("gen", "Lt", "4")), true },
        { Exprs(Expr("gen", "Lt", "3")), false },
        { Exprs(Expr("gen", "Gt", "-1")), true },
        { Exprs(Expr("gen", "Gt", "+2")), true },
        { Exprs(Expr("gpu", "Gt", "0")), false },                          // no label: no match
        { Exprs(Expr("zone", "Gt", "0")), false },                         // a label that is no integer: no match
        { Exprs(Expr("gen", "Gt", "two")), false },                        // a value that is no integer: invalid
        { Exprs(Expr("gen", "Gt", "1", "2")), false },                     // Gt takes exactly one value
        { Exprs(Expr("gen", "Gt")), false },
        { Exprs(Expr("gen", "Lt", " 9")), false },                         // no white space in integers
        // Expressions in a term are ANDed.
        { Exprs(Expr("zone", "In", "iad-1"), Expr("gen", "Gt", "2")), true },
        { Exprs(Expr("zone", "In", "iad-1"), Expr("gen", "Gt", "5")), false },
        // Invalid operators: the term fails to convert and matches no node.
        { Exprs(Expr("zone", "Equal", "iad-1")), false },
        { Exprs(Expr("zone", "In")), false },
        // matchFields: metadata.name (the node's name, its hostname label) with In or NotIn and exactly one value.
        { """{"matchFields":[""" + Expr("metadata.name", "In", "node-a") + "]}", true },
        { """{"matchFields":[""" + Expr("metadata.name", "In", "node-b") + "]}", false },
        { """{"matchFields":[""" + Expr("metadata.name", "NotIn", "node-b") + "]}", true },
        { """{"matchFields":[""" + Expr("metadata.name", "NotIn", "node-a") + "]}", false },
        { """{"matchFields":[""" + Expr("metadata.name", "In", "node-a", "node-b") + "]}", false },   // must have one element
        { """{"matchFields":[""" + Expr("metadata.name", "Exists") + "]}", false },                  // not supported on fields
        { """{"matchFields":[""" + Expr("kubernetes.io/hostname", "In", "node-a") + "]}", false },   // only metadata.name is a field
        // matchExpressions and matchFields in one term are ANDed.
        { """{"matchExpressions":[""" + Expr("zone", "In", "iad-1") + """],"matchFields":[""" + Expr("metadata.name", "In", "node-a") + "]}", true },
        { """{"matchExpressions":[""" + Expr("zone", "In", "iad-1") + """],"matchFields":[""" + Expr("metadata.name", "In", "node-b") + "]}", false },
    };

    [Theory]
    [MemberData(nameof(NodeTerms))]
    public void NodeSelectorTerm(string json, bool matches) => Assert.Equal(matches, Term(json).Matches(Node));

    // ---- the string form (kubectl -l, --node-selector, the embedded API server's labelSelector) ----------------

    [Theory]
    [InlineData("", true)]                            // the empty selector selects everything
    [InlineData("  ", true)]
    [InlineData("app=web", true)]
    [InlineData("app==web", true)]
    [InlineData("app=api", false)]
    [InlineData("canary=true", false)]
    [InlineData("app!=api", true)]
    [InlineData("canary!=true", true)]                // != holds without the label, as NotIn does
    [InlineData("tier!=db", false)]
    [InlineData("tier in (db,cache)", true)]
    [InlineData("tier in (cache)", false)]
    [InlineData("tier notin (cache)", true)]
    [InlineData("canary notin (true)", true)]
    [InlineData("tier", true)]
    [InlineData("canary", false)]
    [InlineData("!canary", true)]
    [InlineData("!tier", false)]
    [InlineData("gen>2", true)]
    [InlineData("gen<3", false)]
    [InlineData("app>2", false)]                      // a label that is no integer
    [InlineData("app=web,tier=cache", false)]         // comma is AND
    [InlineData("app=web, tier in (db)", true)]
    [InlineData("canary in ()", false)]               // "()" is the set of the empty value
    public void StringForm(string text, bool matches) => Assert.Equal(matches, LabelSelector.Parse(text).Matches(Pod));

    [Fact]
    public void TheEmptyValueInParenthesesMatchesAnEmptyLabel() =>
        Assert.True(LabelSelector.Parse("canary in ()").Matches(new Dictionary<string, string> { ["canary"] = "" }));

    [Theory]
    [InlineData("app=web,")]              // trailing comma: a missing key
    [InlineData(",app=web")]
    [InlineData("app in (web")]
    [InlineData("app in web")]
    [InlineData("app notin")]
    [InlineData("app =! web")]
    [InlineData("app=we b")]
    [InlineData("app=-web")]              // values begin and end with an alphanumeric
    [InlineData("/app=web")]              // an empty prefix
    [InlineData("a b")]
    [InlineData("gen>two")]
    [InlineData("gen<")]
    [InlineData("app=web)")]
    public void StringFormRefusesWhatTheApiServerRefuses(string text)
    {
        Assert.NotNull(LabelSelector.Validate(text));
        Assert.Throws<FormatException>(() => LabelSelector.Parse(text));
    }

    [Fact]
    public void LongKeysAndValuesFollowTheLabelLimits()
    {
        Assert.Null(LabelSelector.Validate("example.com/" + new string('k', 63) + "=" + new string('v', 63)));
        Assert.NotNull(LabelSelector.Validate(new string('k', 64) + "=v"));       // name part at most 63
        Assert.NotNull(LabelSelector.Validate("k=" + new string('v', 64)));       // value at most 63
    }
}
