namespace Postgrey.Core.Storage;

/// <summary>
/// Run-to-completion, for a store that commits on the caller's thread when that is cheap (SQLite):
/// a server loop opens a round, starts the decisions of every request it has read, and closes
/// the round, which commits them all in one transaction on the loop's own thread, with no hand-off
/// to a writer thread and back. A store that cannot (busy, or a commit that waits on a network)
/// hands the round to its usual path, and the loop waits for the commits as it always does.
/// </summary>
public interface IDecisionRounds
{
    /// <summary>From now until <see cref="EndRound"/>, decisions started on this thread are held.</summary>
    void BeginRound();

    /// <summary>Commits the held decisions, here if the store is free (they have then completed
    /// on return), else through the store's usual path.</summary>
    void EndRound();
}
