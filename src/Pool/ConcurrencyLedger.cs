namespace FireSharp.Pool;

/// <summary>
/// Admission control in Lambda's model, as plain bookkeeping (not thread-safe: the pool calls it under its lock).
/// A function with a reservation R runs at most R at once and R is set aside for it; the others share the
/// unreserved pool (limit − Σ reservations); nothing exceeds the account limit.
/// </summary>
internal sealed class ConcurrencyLedger(int accountLimit, int unreservedMinimum)
{
    internal sealed class Entry
    {
        public int? Reserved { get; internal set; }
        public int InFlight { get; internal set; }
    }

    private readonly HashSet<Entry> _entries = [];

    public int AccountLimit { get; } = accountLimit;
    public int UnreservedMinimum { get; } = unreservedMinimum;
    public int TotalInFlight { get; private set; }
    /// <summary>In-flight invocations of functions that have a reservation.</summary>
    public int ReservedInFlight { get; private set; }
    public int TotalReserved { get; private set; }
    public int UnreservedLimit => AccountLimit - TotalReserved;
    public int UnreservedInFlight => TotalInFlight - ReservedInFlight;

    public Entry Add(int? reserved)
    {
        if (reserved is int r && ValidateReservation(null, r) is { } error)
            throw new InvalidFunctionRequestException("ReservedConcurrency", error);
        var e = new Entry { Reserved = reserved };
        _entries.Add(e);
        TotalReserved += reserved ?? 0;
        return e;
    }

    /// <summary>Forgets the entry and its reservation. Its in-flight count should be zero by then.</summary>
    public void Remove(Entry e)
    {
        if (!_entries.Remove(e)) return;
        TotalReserved -= e.Reserved ?? 0;
        TotalInFlight -= e.InFlight;
        if (e.Reserved is not null) ReservedInFlight -= e.InFlight;
        e.InFlight = 0;
    }

    /// <summary>null when <paramref name="reserved"/> is allowed for <paramref name="e"/> (null = a new entry), else why not.</summary>
    public string? ValidateReservation(Entry? e, int reserved)
    {
        if (reserved < 0) return "must be ≥ 0";
        int others = TotalReserved - (e?.Reserved ?? 0);
        int max = AccountLimit - UnreservedMinimum - others;
        return others + reserved > AccountLimit - UnreservedMinimum
            ? $"{reserved} would leave less than the unreserved minimum of {UnreservedMinimum} (at most {Math.Max(0, max)} can be reserved)"
            : null;
    }

    public void SetReserved(Entry e, int? reserved)
    {
        if (reserved is int r && ValidateReservation(e, r) is { } error)
            throw new InvalidFunctionRequestException("ReservedConcurrency", error);
        TotalReserved += (reserved ?? 0) - (e.Reserved ?? 0);
        if (e.Reserved is null && reserved is not null) ReservedInFlight += e.InFlight;
        else if (e.Reserved is not null && reserved is null) ReservedInFlight -= e.InFlight;
        e.Reserved = reserved;
    }

    /// <summary>Takes one slot for <paramref name="e"/>, or says which limit is reached.</summary>
    public bool TryAcquire(Entry e, out ThrottleReason reason, out int limit)
    {
        if (e.Reserved is int r)
        {
            if (e.InFlight >= r) { reason = ThrottleReason.ReservedConcurrency; limit = r; return false; }
        }
        else if (UnreservedInFlight >= UnreservedLimit)
        {
            reason = ThrottleReason.UnreservedConcurrency; limit = Math.Max(0, UnreservedLimit); return false;
        }
        // Only reachable past the checks above after reservations were lowered while invocations ran.
        if (TotalInFlight >= AccountLimit) { reason = ThrottleReason.AccountConcurrency; limit = AccountLimit; return false; }

        e.InFlight++;
        TotalInFlight++;
        if (e.Reserved is not null) ReservedInFlight++;
        reason = default; limit = 0;
        return true;
    }

    public void Release(Entry e)
    {
        if (!_entries.Contains(e) || e.InFlight <= 0) throw new InvalidOperationException("release without acquire");
        e.InFlight--;
        TotalInFlight--;
        if (e.Reserved is not null) ReservedInFlight--;
    }
}
