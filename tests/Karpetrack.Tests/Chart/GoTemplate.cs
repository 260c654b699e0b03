using System.Globalization;
using System.Text;

namespace Karpetrack.Tests.Chart;

/// <summary>A template that cannot be parsed or rendered; the message says which file and why.</summary>
internal sealed class TemplateException(string message) : Exception(message);

/// <summary>
/// The subset of Go's text/template (plus the Sprig functions Helm adds) that charts/karpetrack uses.
/// There is no helm binary here, so the chart tests render with this. Deliberately stricter than Helm
/// in one way: a missing map key is an error rather than an empty value, so a misspelt .Values path
/// fails the test instead of rendering an empty field. Anything outside the subset is an error too,
/// which keeps the chart inside what is tested.
/// </summary>
internal sealed class GoTemplate
{
    private readonly Dictionary<string, List<Node>> defines = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<Node>> files = new(StringComparer.Ordinal);

    /// <summary>Parses one file; its `define`s become visible to every file parsed into this set.</summary>
    public void Add(string name, string text) => files[name] = new Parser(name, text, defines).ParseAll();

    public string Render(string name, object? data)
    {
        var sb = new StringBuilder();
        var state = new State(this, data);
        state.Exec(files[name], data, sb);
        return sb.ToString();
    }

    // ---- syntax tree -------------------------------------------------------------------------

    private abstract record Node;
    private sealed record TextNode(string Text) : Node;
    private sealed record OutputNode(Pipeline Pipe) : Node;
    private sealed record AssignNode(string Var, Pipeline Pipe) : Node;
    private sealed record IfNode(List<(Pipeline Cond, List<Node> Body)> Branches, List<Node>? Else) : Node;
    private sealed record WithNode(Pipeline Pipe, List<Node> Body, List<Node>? Else) : Node;
    private sealed record RangeNode(string? KeyVar, string? ValueVar, Pipeline Pipe, List<Node> Body, List<Node>? Else) : Node;
    private sealed record TemplateNode(string Name, Pipeline? Pipe) : Node;

    private sealed record Pipeline(List<List<Operand>> Commands);

    private abstract record Operand;
    private sealed record FieldOp(string? Var, string[] Path) : Operand;   // Var null: relative to dot
    private sealed record LiteralOp(object? Value) : Operand;
    private sealed record FuncOp(string Name) : Operand;
    private sealed record SubOp(Pipeline Pipe) : Operand;

    private enum Tok { Str, Num, Field, Var, Ident, LParen, RParen, Pipe, Declare, Comma }
    private sealed record Token(Tok Kind, string Text, object? Value = null);

    // ---- parsing -------------------------------------------------------------------------------

    private sealed class Parser(string file, string text, Dictionary<string, List<Node>> defines)
    {
        // Items are text runs and action token lists, already whitespace-trimmed.
        private readonly List<object> items = [];
        private int pos;

        public List<Node> ParseAll()
        {
            Lex();
            var nodes = ParseList(out var stop);
            if (stop is not null) throw Error($"unexpected {{{{{stop[0].Text}}}}}");
            return nodes;
        }

        private TemplateException Error(string what) => new($"{file}: {what}");

        private void Lex()
        {
            int i = 0;
            bool trimNext = false;
            while (i < text.Length)
            {
                int open = text.IndexOf("{{", i, StringComparison.Ordinal);
                var run = open < 0 ? text[i..] : text[i..open];
                if (trimNext) run = run.TrimStart(' ', '\t', '\r', '\n');
                if (open < 0) { items.Add(run); break; }
                int start = open + 2;
                bool trimLeft = start + 1 < text.Length && text[start] == '-' && char.IsWhiteSpace(text[start + 1]);
                if (trimLeft) { run = run.TrimEnd(' ', '\t', '\r', '\n'); start += 2; }
                items.Add(run);
                int close = FindClose(start);
                int end = close;
                trimNext = close - 2 >= start && text[close - 1] == '-' && char.IsWhiteSpace(text[close - 2]);
                if (trimNext) end = close - 1;
                var body = text[start..end].Trim();
                if (!(body.StartsWith("/*", StringComparison.Ordinal) && body.EndsWith("*/", StringComparison.Ordinal)))
                    items.Add(Tokenize(body));
                i = close + 2;
            }
        }

        private int FindClose(int from)
        {
            for (int j = from; j < text.Length - 1; j++)
            {
                char c = text[j];
                if (c == '"') { j++; while (j < text.Length && text[j] != '"') { if (text[j] == '\\') j++; j++; } }
                else if (c == '`') { j = text.IndexOf('`', j + 1); if (j < 0) break; }
                else if (c == '/' && text[j + 1] == '*') { j = text.IndexOf("*/", j + 2, StringComparison.Ordinal); if (j < 0) break; j++; }
                else if (c == '}' && text[j + 1] == '}') return j;
            }
            throw Error("unclosed action");
        }

        private List<Token> Tokenize(string s)
        {
            var tokens = new List<Token>();
            int i = 0;
            static bool IdentChar(char c) => char.IsAsciiLetterOrDigit(c) || c == '_';
            while (i < s.Length)
            {
                char c = s[i];
                if (char.IsWhiteSpace(c)) { i++; continue; }
                if (c == '(') { tokens.Add(new(Tok.LParen, "(")); i++; }
                else if (c == ')') { tokens.Add(new(Tok.RParen, ")")); i++; }
                else if (c == '|') { tokens.Add(new(Tok.Pipe, "|")); i++; }
                else if (c == ',') { tokens.Add(new(Tok.Comma, ",")); i++; }
                else if (c == ':' && i + 1 < s.Length && s[i + 1] == '=') { tokens.Add(new(Tok.Declare, ":=")); i += 2; }
                else if (c == '"')
                {
                    var sb = new StringBuilder();
                    i++;
                    while (i < s.Length && s[i] != '"')
                    {
                        if (s[i] == '\\' && i + 1 < s.Length)
                        {
                            i++;
                            sb.Append(s[i] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', var e => e });
                        }
                        else sb.Append(s[i]);
                        i++;
                    }
                    if (i >= s.Length) throw Error("unterminated string");
                    i++;
                    tokens.Add(new(Tok.Str, sb.ToString(), sb.ToString()));
                }
                else if (c == '`')
                {
                    int end = s.IndexOf('`', i + 1);
                    if (end < 0) throw Error("unterminated raw string");
                    var raw = s[(i + 1)..end];
                    tokens.Add(new(Tok.Str, raw, raw));
                    i = end + 1;
                }
                else if (char.IsAsciiDigit(c) || (c == '-' && i + 1 < s.Length && char.IsAsciiDigit(s[i + 1])))
                {
                    int st = i++;
                    while (i < s.Length && (char.IsAsciiDigit(s[i]) || s[i] == '.')) i++;
                    var num = s[st..i];
                    object v = num.Contains('.') ? (object)double.Parse(num, CultureInfo.InvariantCulture) : long.Parse(num, CultureInfo.InvariantCulture);
                    tokens.Add(new(Tok.Num, num, v));
                }
                else if (c == '.' || c == '$')
                {
                    int st = i++;
                    while (i < s.Length && (IdentChar(s[i]) || s[i] == '.')) i++;
                    var chain = s[st..i];
                    tokens.Add(new(c == '.' ? Tok.Field : Tok.Var, chain));
                }
                else if (IdentChar(c))
                {
                    int st = i;
                    while (i < s.Length && IdentChar(s[i])) i++;
                    tokens.Add(new(Tok.Ident, s[st..i]));
                }
                else throw Error($"unexpected character '{c}' in action \"{s}\"");
            }
            if (tokens.Count == 0) throw Error("empty action");
            return tokens;
        }

        // Returns the nodes up to an `end` or `else` action, which it hands back in `stop`.
        private List<Node> ParseList(out List<Token>? stop)
        {
            var nodes = new List<Node>();
            stop = null;
            while (pos < items.Count)
            {
                var item = items[pos++];
                if (item is string s) { if (s.Length > 0) nodes.Add(new TextNode(s)); continue; }
                var t = (List<Token>)item;
                var head = t[0].Kind == Tok.Ident ? t[0].Text : null;
                switch (head)
                {
                    case "end" or "else":
                        stop = t;
                        return nodes;
                    case "if":
                        nodes.Add(ParseIf(t));
                        break;
                    case "with":
                    {
                        var pipe = ParsePipeline(t, 1, out _);
                        var body = ParseList(out var st);
                        List<Node>? elseBody = null;
                        if (st![0].Text == "else") { elseBody = ParseList(out st); }
                        ExpectEnd(st, "with");
                        nodes.Add(new WithNode(pipe, body, elseBody));
                        break;
                    }
                    case "range":
                    {
                        string? k = null, v = null;
                        int at = 1;
                        if (t.Count > 2 && t[1].Kind == Tok.Var && t[2].Kind == Tok.Declare) { v = t[1].Text; at = 3; }
                        else if (t.Count > 4 && t[1].Kind == Tok.Var && t[2].Kind == Tok.Comma && t[3].Kind == Tok.Var && t[4].Kind == Tok.Declare)
                        { k = t[1].Text; v = t[3].Text; at = 5; }
                        var pipe = ParsePipeline(t, at, out _);
                        var body = ParseList(out var st);
                        List<Node>? elseBody = null;
                        if (st![0].Text == "else") { elseBody = ParseList(out st); }
                        ExpectEnd(st, "range");
                        nodes.Add(new RangeNode(k, v, pipe, body, elseBody));
                        break;
                    }
                    case "define":
                    {
                        if (t.Count != 2 || t[1].Kind != Tok.Str) throw Error("define needs one quoted name");
                        var body = ParseList(out var st);
                        ExpectEnd(st, "define");
                        defines[(string)t[1].Value!] = body;
                        break;
                    }
                    case "template":
                    {
                        if (t.Count < 2 || t[1].Kind != Tok.Str) throw Error("template needs a quoted name");
                        nodes.Add(new TemplateNode((string)t[1].Value!, t.Count > 2 ? ParsePipeline(t, 2, out _) : null));
                        break;
                    }
                    default:
                        if (t.Count > 2 && t[0].Kind == Tok.Var && t[1].Kind == Tok.Declare)
                            nodes.Add(new AssignNode(t[0].Text, ParsePipeline(t, 2, out _)));
                        else
                            nodes.Add(new OutputNode(ParsePipeline(t, 0, out _)));
                        break;
                }
            }
            return nodes;
        }

        private IfNode ParseIf(List<Token> t)
        {
            var branches = new List<(Pipeline, List<Node>)>();
            var cond = ParsePipeline(t, 1, out _);
            while (true)
            {
                var body = ParseList(out var st);
                branches.Add((cond, body));
                if (st is null) throw Error("if without end");
                if (st[0].Text == "end") return new IfNode(branches, null);
                if (st.Count > 1 && st[1].Kind == Tok.Ident && st[1].Text == "if") { cond = ParsePipeline(st, 2, out _); continue; }
                var elseBody = ParseList(out st);
                ExpectEnd(st, "if");
                return new IfNode(branches, elseBody);
            }
        }

        private void ExpectEnd(List<Token>? st, string what)
        {
            if (st is null || st[0].Text != "end" || st.Count != 1) throw Error($"{what} without end");
        }

        private Pipeline ParsePipeline(List<Token> t, int at, out int next)
        {
            if (at >= t.Count) throw Error("missing pipeline");
            var commands = new List<List<Operand>>();
            var cmd = new List<Operand>();
            int i = at;
            while (i < t.Count)
            {
                var tok = t[i];
                if (tok.Kind == Tok.RParen) break;
                i++;
                switch (tok.Kind)
                {
                    case Tok.Pipe:
                        if (cmd.Count == 0) throw Error("empty command before |");
                        commands.Add(cmd); cmd = []; break;
                    case Tok.Str or Tok.Num: cmd.Add(new LiteralOp(tok.Value)); break;
                    case Tok.Field:
                        cmd.Add(new FieldOp(null, tok.Text == "." ? [] : tok.Text[1..].Split('.'))); break;
                    case Tok.Var:
                    {
                        var parts = tok.Text.Split('.');
                        cmd.Add(new FieldOp(parts[0], parts[1..])); break;
                    }
                    case Tok.Ident:
                        cmd.Add(tok.Text switch
                        {
                            "true" => new LiteralOp(true),
                            "false" => new LiteralOp(false),
                            "nil" => new LiteralOp(null),
                            _ => new FuncOp(tok.Text),
                        });
                        break;
                    case Tok.LParen:
                    {
                        var sub = ParsePipeline(t, i, out i);
                        if (i >= t.Count || t[i].Kind != Tok.RParen) throw Error("missing )");
                        i++;
                        cmd.Add(new SubOp(sub)); break;
                    }
                    default: throw Error($"unexpected {tok.Text}");
                }
            }
            if (cmd.Count == 0) throw Error("empty command");
            commands.Add(cmd);
            next = i;
            return new Pipeline(commands);
        }
    }

    // ---- evaluation ----------------------------------------------------------------------------

    private sealed class State(GoTemplate set, object? root)
    {
        private readonly List<Dictionary<string, object?>> scopes = [new() { ["$"] = root }];
        private int depth;

        public void Exec(List<Node> nodes, object? dot, StringBuilder sb)
        {
            scopes.Add([]);
            try
            {
                foreach (var node in nodes) ExecNode(node, dot, sb);
            }
            finally { scopes.RemoveAt(scopes.Count - 1); }
        }

        private void ExecNode(Node node, object? dot, StringBuilder sb)
        {
            switch (node)
            {
                case TextNode t: sb.Append(t.Text); break;
                case OutputNode o: sb.Append(Format(Eval(o.Pipe, dot))); break;
                case AssignNode a: scopes[^1][a.Var] = Eval(a.Pipe, dot); break;
                case IfNode i:
                {
                    foreach (var (cond, body) in i.Branches)
                        if (Truthy(Eval(cond, dot))) { Exec(body, dot, sb); return; }
                    if (i.Else is not null) Exec(i.Else, dot, sb);
                    break;
                }
                case WithNode w:
                {
                    var v = Eval(w.Pipe, dot);
                    if (Truthy(v)) Exec(w.Body, v, sb);
                    else if (w.Else is not null) Exec(w.Else, dot, sb);
                    break;
                }
                case RangeNode r:
                {
                    var v = Eval(r.Pipe, dot);
                    var pairs = v switch
                    {
                        null => [],
                        List<object?> list => list.Select((x, n) => ((object?)(long)n, x)).ToList(),
                        // Go ranges over maps in key order.
                        Dictionary<string, object?> map => map.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => ((object?)p.Key, p.Value)).ToList(),
                        _ => throw new TemplateException($"range over {TypeName(v)}"),
                    };
                    if (pairs.Count == 0) { if (r.Else is not null) Exec(r.Else, dot, sb); break; }
                    foreach (var (k, x) in pairs)
                    {
                        scopes.Add([]);
                        if (r.KeyVar is not null) scopes[^1][r.KeyVar] = k;
                        if (r.ValueVar is not null) scopes[^1][r.ValueVar] = x;
                        try { Exec(r.Body, x, sb); }
                        finally { scopes.RemoveAt(scopes.Count - 1); }
                    }
                    break;
                }
                case TemplateNode t:
                    sb.Append(Include(t.Name, t.Pipe is null ? null : Eval(t.Pipe, dot)));
                    break;
            }
        }

        private string Include(string name, object? data)
        {
            if (!set.defines.TryGetValue(name, out var body)) throw new TemplateException($"no template \"{name}\"");
            if (++depth > 50) throw new TemplateException($"template \"{name}\" recurses too deep");
            // A named template sees only its argument and its own $, as in Go.
            var inner = new State(set, data) { depth = depth };
            var sb = new StringBuilder();
            inner.Exec(body, data, sb);
            depth--;
            return sb.ToString();
        }

        private object? Eval(Pipeline pipe, object? dot)
        {
            object? last = null;
            bool first = true;
            foreach (var cmd in pipe.Commands)
            {
                last = EvalCommand(cmd, dot, first ? null : new[] { last });
                first = false;
            }
            return last;
        }

        private object? EvalCommand(List<Operand> cmd, object? dot, object?[]? piped)
        {
            if (cmd[0] is FuncOp f)
            {
                var args = cmd.Skip(1).Select(o => EvalOperand(o, dot)).ToList();
                if (piped is not null) args.AddRange(piped);
                return Call(f.Name, args);
            }
            var head = EvalOperand(cmd[0], dot);
            if (head is Func<object?[], object?> method)
            {
                var args = cmd.Skip(1).Select(o => EvalOperand(o, dot)).ToList();
                if (piped is not null) args.AddRange(piped);
                return method(args.ToArray());
            }
            if (cmd.Count > 1 || piped is not null) throw new TemplateException("arguments given to a value that is not a function");
            return head;
        }

        private object? EvalOperand(Operand op, object? dot) => op switch
        {
            LiteralOp l => l.Value,
            SubOp s => Eval(s.Pipe, dot),
            FuncOp f => Call(f.Name, []),
            FieldOp fo => Walk(fo.Var is null ? dot : Lookup(fo.Var), fo.Path, fo.Var ?? ""),
            _ => throw new TemplateException("bad operand"),
        };

        private object? Lookup(string name)
        {
            for (int i = scopes.Count - 1; i >= 0; i--)
                if (scopes[i].TryGetValue(name, out var v)) return v;
            throw new TemplateException($"undefined variable {name}");
        }

        private static object? Walk(object? v, string[] path, string prefix)
        {
            var seen = prefix;
            foreach (var seg in path)
            {
                seen += "." + seg;
                if (v is Dictionary<string, object?> map)
                {
                    if (!map.TryGetValue(seg, out v)) throw new TemplateException($"missing value {seen}");
                }
                else throw new TemplateException($"cannot read {seen}: {TypeName(v)} has no fields");
            }
            return v;
        }

        private object? Call(string name, List<object?> a)
        {
            void Arity(int n) { if (a.Count != n) throw new TemplateException($"{name} takes {n} arguments, got {a.Count}"); }
            switch (name)
            {
                case "default": Arity(2); return Truthy(a[1]) ? a[1] : a[0];
                case "quote": return string.Join(" ", a.Where(x => x is not null).Select(x => GoQuote(Format(x))));
                case "toYaml": Arity(1); return Yaml.Emit(a[0]).TrimEnd('\n');
                case "nindent": Arity(2); return "\n" + Indent(ToLong(a[0]), Format(a[1]));
                case "indent": Arity(2); return Indent(ToLong(a[0]), Format(a[1]));
                case "printf": return Printf(Format(a[0]), a.Skip(1).ToList());
                case "eq": Arity(2); return Compare(a[0], a[1], name) == 0;
                case "ne": Arity(2); return Compare(a[0], a[1], name) != 0;
                case "gt": Arity(2); return Compare(a[0], a[1], name) > 0;
                case "ge": Arity(2); return Compare(a[0], a[1], name) >= 0;
                case "lt": Arity(2); return Compare(a[0], a[1], name) < 0;
                case "le": Arity(2); return Compare(a[0], a[1], name) <= 0;
                case "and": return a.FirstOrDefault(x => !Truthy(x), a.Count > 0 ? a[^1] : null);
                case "or": return a.FirstOrDefault(Truthy, a.Count > 0 ? a[^1] : null);
                case "not": Arity(1); return !Truthy(a[0]);
                case "required":
                    Arity(2);
                    if (a[1] is null || a[1] is string { Length: 0 }) throw new TemplateException(Format(a[0]));
                    return a[1];
                case "b64enc": Arity(1); return Convert.ToBase64String(Encoding.UTF8.GetBytes(Format(a[0])));
                case "trunc":
                {
                    Arity(2);
                    var n = ToLong(a[0]); var s = Format(a[1]);
                    if (n >= 0) return s.Length > n ? s[..(int)n] : s;
                    return s.Length > -n ? s[(int)(s.Length + n)..] : s;
                }
                case "trimSuffix": Arity(2); { var s = Format(a[1]); var suf = Format(a[0]); return suf.Length > 0 && s.EndsWith(suf, StringComparison.Ordinal) ? s[..^suf.Length] : s; }
                case "include": Arity(2); return Include(Format(a[0]), a[1]);
                case "int": Arity(1); return a[0] switch { long l => l, double d => (long)d, string s when long.TryParse(s, out var l) => l, null => 0L, var x => throw new TemplateException($"int of {TypeName(x)}") };
                case "join":
                    Arity(2);
                    return a[1] is List<object?> items ? string.Join(Format(a[0]), items.Select(Format)) : Format(a[1]);
                default: throw new TemplateException($"function \"{name}\" is outside the chart's template subset");
            }
        }
    }

    // ---- value helpers (Go semantics where it matters) ------------------------------------------

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        Dictionary<string, object?> m => m.Count > 0,
        List<object?> l => l.Count > 0,
        _ => true,
    };

    public static string Format(object? v) => v switch
    {
        null => "",
        bool b => b ? "true" : "false",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        string s => s,
        _ => throw new TemplateException($"cannot print {TypeName(v)}; use toYaml"),
    };

    private static string TypeName(object? v) => v switch
    {
        null => "nil", bool => "bool", long => "int", double => "float", string => "string",
        Dictionary<string, object?> => "map", List<object?> => "list", _ => v.GetType().Name,
    };

    private static long ToLong(object? v) => v is long l ? l : throw new TemplateException($"expected an int, got {TypeName(v)}");

    // Go refuses to compare values of different basic kinds; so does this, which catches `mode: off` read as a bool.
    private static int Compare(object? x, object? y, string fn) => (x, y) switch
    {
        (null, null) => 0,
        (long a, long b) => a.CompareTo(b),
        (double a, double b) => a.CompareTo(b),
        (string a, string b) => string.CompareOrdinal(a, b),
        (bool a, bool b) when fn is "eq" or "ne" => a.CompareTo(b),
        _ => throw new TemplateException($"{fn}: incompatible types for comparison ({TypeName(x)} and {TypeName(y)})"),
    };

    private static string Indent(long n, string s)
    {
        var pad = new string(' ', (int)n);
        return pad + s.Replace("\n", "\n" + pad, StringComparison.Ordinal);
    }

    private static string GoQuote(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (var c in s)
            sb.Append(c switch { '"' => "\\\"", '\\' => "\\\\", '\n' => "\\n", '\t' => "\\t", '\r' => "\\r", _ => c.ToString() });
        return sb.Append('"').ToString();
    }

    private static string Printf(string format, List<object?> args)
    {
        var sb = new StringBuilder();
        int next = 0;
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%') { sb.Append(format[i]); continue; }
            if (++i >= format.Length) throw new TemplateException("printf: trailing %");
            if (format[i] == '%') { sb.Append('%'); continue; }
            if (next >= args.Count) throw new TemplateException($"printf: missing argument for %{format[i]}");
            var arg = args[next++];
            sb.Append(format[i] switch
            {
                's' or 'v' => Format(arg),
                'd' => ToLong(arg).ToString(CultureInfo.InvariantCulture),
                'q' => GoQuote(Format(arg)),
                var verb => throw new TemplateException($"printf: verb %{verb} is outside the subset"),
            });
        }
        if (next != args.Count) throw new TemplateException("printf: too many arguments");
        return sb.ToString();
    }
}
