using System.Globalization;

namespace Karpetrack;

/// <summary>
/// A Kubernetes resource quantity (`250m`, `1.5Gi`, `1e3`, …) held as an exact decimal.
/// Parsing follows apimachinery's grammar and rounds non-zero values up to a multiple of 1n,
/// so the integer views (<see cref="CeilUnits"/>, <see cref="CeilMilli"/>) match what the
/// scheduler computes with Value() and MilliValue().
/// </summary>
public readonly record struct Quantity(decimal Value)
{
    public static readonly Quantity Zero = new(0m);

    // 2^63-1: apimachinery caps values that do not fit into an int64 (e.g. `9Ei` still fits, `10Ei` does not).
    private const decimal MaxInt64 = 9223372036854775807m;

    /// <summary>The largest decimal exponent accepted (`1e1000`).</summary>
    public const int MaxExponent = 1000;

    public static Quantity Parse(string text) =>
        TryParse(text, out var q, out var error) ? q : throw new FormatException(error);

    public static bool TryParse(ReadOnlySpan<char> s, out Quantity quantity, out string? error)
    {
        quantity = Zero;
        error = null;
        if (s.IsEmpty) { error = "quantity is empty"; return false; }

        int i = 0;
        bool negative = false;
        if (s[0] == '+' || s[0] == '-') { negative = s[0] == '-'; i++; }

        // Mantissa digits are accumulated into a decimal; digits beyond decimal's 28-29 significant
        // places cannot change the capped or 1n-rounded result in practice, so they only bump a scale.
        decimal mantissa = 0m;
        int fractionDigits = 0, integerOverflowDigits = 0, digits = 0;
        bool seenPoint = false, truncatedNonZero = false;
        for (; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '.')
            {
                if (seenPoint) { error = Invalid(s, "has two decimal points"); return false; }
                seenPoint = true;
                continue;
            }
            if (c < '0' || c > '9') break;
            digits++;
            int d = c - '0';
            if (mantissa >= 1e26m)
            {
                if (seenPoint) { if (d != 0) truncatedNonZero = true; }
                else integerOverflowDigits++;
                continue;
            }
            mantissa = mantissa * 10 + d;
            if (seenPoint) fractionDigits++;
        }
        if (digits == 0) { error = Invalid(s, "has no digits"); return false; }

        var suffix = s[i..];
        int exponent10 = 0;
        long binaryMultiplier = 1;
        if (suffix.IsEmpty) { }
        else if (suffix.Length == 2 && suffix[1] == 'i')
        {
            int shift = suffix[0] switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, 'P' => 50, 'E' => 60, _ => -1 };
            if (shift < 0) { error = Invalid(s, $"has an unknown suffix \"{suffix}\""); return false; }
            binaryMultiplier = 1L << shift;
        }
        else if (suffix.Length == 1 && SiExponent(suffix[0]) is int e)
        {
            exponent10 = e;
        }
        else if (suffix[0] is 'e' or 'E' && suffix.Length > 1)
        {
            if (!int.TryParse(suffix[1..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out exponent10)
                || suffix[1..].ContainsAny(' ', '\t') || suffix.Length > 12)
            {
                error = Invalid(s, $"has a malformed exponent \"{suffix}\"");
                return false;
            }
            // Past ±MaxExponent every value is capped at int64 or rounded up to 1n anyway; such an
            // exponent is garbage, and unbounded it would overflow the scale arithmetic below.
            if (Math.Abs((long)exponent10) > MaxExponent)
            {
                error = Invalid(s, $"has an out-of-range exponent \"{suffix}\" (at most ±{MaxExponent})");
                return false;
            }
        }
        else
        {
            error = Invalid(s, $"has an unknown suffix \"{suffix}\"");
            return false;
        }

        quantity = new Quantity(Compose(mantissa, fractionDigits, integerOverflowDigits + exponent10, binaryMultiplier, truncatedNonZero, negative));
        return true;
    }

    private static int? SiExponent(char c) => c switch
    {
        'n' => -9, 'u' => -6, 'm' => -3, 'k' => 3, 'M' => 6, 'G' => 9, 'T' => 12, 'P' => 15, 'E' => 18,
        _ => null,
    };

    private static string Invalid(ReadOnlySpan<char> s, string why) => $"quantity \"{s}\" {why}";

    // value = mantissa × 10^(exponent10 − fractionDigits) × binaryMultiplier, rounded up (away from
    // zero) to a multiple of 1e-9 and capped at the int64 range, as apimachinery does.
    private static decimal Compose(decimal mantissa, int fractionDigits, int exponent10, long binaryMultiplier, bool truncatedNonZero, bool negative)
    {
        if (mantissa == 0m && !truncatedNonZero) return 0m;
        int scale = exponent10 - fractionDigits;
        decimal magnitude;
        try
        {
            // Work in nano units so that the rounding to 1n is an integer ceiling.
            int nanoScale = scale + 9;
            decimal nanos = mantissa * binaryMultiplier;
            if (nanoScale >= 0)
            {
                for (int k = 0; k < nanoScale; k++)
                {
                    nanos *= 10;
                    if (nanos > MaxInt64 * 1_000_000_000m) return negative ? -MaxInt64 : MaxInt64;
                }
            }
            else
            {
                bool remainder = truncatedNonZero;
                for (int k = 0; k < -nanoScale; k++)
                {
                    decimal next = decimal.Truncate(nanos / 10);
                    if (next * 10 != nanos) remainder = true;
                    nanos = next;
                    if (nanos == 0) { remainder = true; break; }
                }
                if (remainder) nanos += 1;
            }
            magnitude = nanos / 1_000_000_000m;
        }
        catch (OverflowException)
        {
            return negative ? -MaxInt64 : MaxInt64;
        }
        if (magnitude > MaxInt64) magnitude = MaxInt64;
        return negative ? -magnitude : magnitude;
    }

    /// <summary>ceil(value): bytes for memory, counts for extended resources (Value()).</summary>
    public long CeilUnits => CeilScaled(Value);

    /// <summary>ceil(1000 × value): millicores for CPU (MilliValue()).</summary>
    public long CeilMilli => CeilScaled(Value * 1000m);

    private static long CeilScaled(decimal v)
    {
        decimal c = decimal.Ceiling(v);
        if (c >= MaxInt64) return long.MaxValue;
        if (c <= -MaxInt64) return long.MinValue + 1;
        return (long)c;
    }

    public override string ToString() => Value.ToString(CultureInfo.InvariantCulture);
}
