using Postgrey.Core.Storage;

namespace Postgrey.Core.Greylisting;

/// <summary>What the store-side part of a decision needs: keys, clock and settings.</summary>
internal readonly record struct DecisionInput(
    string TripletKey,
    string? ClientKey,
    long Now,
    long DelaySeconds,
    long RetryWindowSeconds,
    int AutoWhitelistClients);

internal enum DecisionKind
{
    /// <summary>The client is on the auto-whitelist.</summary>
    ClientAwl,

    /// <summary>Not waited long enough.</summary>
    Greylist,

    /// <summary>The triplet passed.</summary>
    Pass,
}

/// <summary>The outcome of the read-modify-write, committed by the store.</summary>
internal readonly record struct DecisionOutcome(
    DecisionKind Kind,
    long FirstSeen,
    long Missing,
    bool LastWasSuccessful,
    bool CorrectedFutureFirstSeen,
    bool ReachedAutoWhitelist)
{
    public static DecisionOutcome ClientAwl { get; } = new(DecisionKind.ClientAwl, 0, 0, false, false, false);
}

/// <summary>
/// postgrey's decision over the stored state (steps 4 to 8 of its smtpd_access_policy): a pure
/// function of the records, the clock and the settings, run by the store inside its transaction.
/// </summary>
internal static class GreylistDecision
{
    private const long AwlUpdateInterval = 3600; // record one passing attempt per hour at most

    public static DecisionOutcome Decide(IGreylistTransaction tx, DecisionInput input)
    {
        long now = input.Now;
        ClientRecord? client = null;
        if (input.ClientKey is not null)
        {
            client = tx.FindClient(input.ClientKey);
            if (client is { } known && known.Count >= input.AutoWhitelistClients)
            {
                if (now >= known.LastSeen + AwlUpdateInterval || known.LastSeen > now)
                {
                    tx.SaveClient(input.ClientKey, new ClientRecord(known.Count + 1, now));
                }
                return DecisionOutcome.ClientAwl;
            }
        }

        long first;
        bool lastWasSuccessful = false;
        bool corrected = false;
        TripletRecord? found = tx.FindTriplet(input.TripletKey);
        if (found is { } stored)
        {
            first = stored.FirstSeen;
            if (stored.LastSeen - stored.FirstSeen >= input.DelaySeconds)
            {
                lastWasSuccessful = true;
            }
            else if (now - first > input.RetryWindowSeconds)
            {
                first = now; // the first retry came after the retry window: start again
            }
            if (first > now)
            {
                corrected = true;
                first = now;
            }
        }
        else
        {
            first = now;
        }
        var record = new TripletRecord(first, now);
        if (found != record)
        {
            // Asked again within the same second: an UPDATE for nothing (a B-tree search and a
            // statement run on the writer; SQLite itself would then find the cell unchanged).
            tx.SaveTriplet(input.TripletKey, record);
        }

        long missing = input.DelaySeconds - (now - first);
        bool reached = false;
        if (input.ClientKey is not null && missing <= 0 && !lastWasSuccessful
            && (client is null || now >= client.Value.LastSeen + AwlUpdateInterval))
        {
            long count = (client?.Count ?? 0) + 1;
            tx.SaveClient(input.ClientKey, new ClientRecord(count, now));
            reached = count == input.AutoWhitelistClients;
        }

        return new DecisionOutcome(
            missing > 0 ? DecisionKind.Greylist : DecisionKind.Pass,
            first,
            missing,
            lastWasSuccessful,
            corrected,
            reached);
    }
}
