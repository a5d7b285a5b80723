using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Identity;
using Postgrey.Core.Protocol;
using Postgrey.Core.Storage;
using Postgrey.Core.Whitelists;

namespace Postgrey.Core.Greylisting;

/// <summary>
/// postgrey's <c>smtpd_access_policy</c>: whitelists, auto-whitelist, triplet, delay, answer.
/// The read-modify-write runs in the store (<see cref="GreylistDecision"/>); everything around it
/// (validation, whitelists, texts, logging) happens here, and the answer is returned only after
/// the store has committed.
/// </summary>
public sealed partial class GreylistEngine
{
    public const string Dunno = "DUNNO";

    /// <summary>The logger category of the decision lines: postgrey's ident.</summary>
    public const string DecisionLogCategory = "postgrey";

    private static readonly Func<IGreylistTransaction, DecisionInput, DecisionOutcome> DecideInStore = GreylistDecision.Decide;

    private readonly IGreylistStore _store;
    private readonly WhitelistProvider _whitelists;
    private readonly GreylistOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ILogger _decisions;
    private readonly InstanceMemory _instances;
    private readonly IKeyIdentityResolver? _identity;

    // Store failures since the last success, said once with their cause, then once a minute.
    private readonly object _failureGate = new();
    private long _storeFailures;
    private long _unreportedFailures;
    private long _lastFailureReport;
    private bool _traced;
    private long _lastTrace;

    // identity: --lookup-by-identity, asked before the store; null: postgrey's keys and lines.
    public GreylistEngine(IGreylistStore store, WhitelistProvider whitelists, GreylistOptions options, TimeProvider time, ILoggerFactory loggerFactory, IKeyIdentityResolver? identity = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(whitelists);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        _store = store;
        _whitelists = whitelists;
        _options = options;
        _time = time;
        _logger = loggerFactory.CreateLogger<GreylistEngine>();
        _decisions = loggerFactory.CreateLogger(DecisionLogCategory);
        _instances = new InstanceMemory(options.InstanceMemory);
        _identity = identity;
    }

    /// <summary>Decides one request and returns the action text (what follows <c>action=</c>).</summary>
    public async ValueTask<string> DecideAsync(PolicyRequest request, CancellationToken cancellationToken)
    {
        PendingDecision pending = Begin(request, cancellationToken);
        if (pending.Action is { } action)
        {
            return action;
        }
        DecisionOutcome outcome;
        try
        {
            outcome = await pending.Commit;
        }
        catch (Exception ex) when (!(ex is OperationCanceledException && cancellationToken.IsCancellationRequested))
        {
            return OnCommitFailed(ex);
        }
        return Answer(request, pending, outcome);
    }

    /// <summary>The store's run-to-completion rounds, if it has them (<see cref="IDecisionRounds"/>).</summary>
    public IDecisionRounds? Rounds => _store as IDecisionRounds;

    /// <summary>
    /// The first half of <see cref="DecideAsync"/>: checks the request and the whitelists and
    /// hands the triplet to the store. The second half, <see cref="Finish"/>, runs once
    /// <see cref="PendingDecision.IsCompleted"/>, on the caller's own thread: the answer and the
    /// decision's log line are then never produced on the store's thread, whichever thread its
    /// commit completes on. <paramref name="request"/> must stay as it is until then.
    /// </summary>
    public PendingDecision Begin(PolicyRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!string.Equals(request.Request, "smtpd_access_policy", StringComparison.Ordinal))
        {
            // postgrey sends no answer at all here and leaves Postfix to time out.
            Log.UnrecognizedRequest(_logger, request.Request ?? "");
            EngineMetrics.Decided("dunno", "bad request");
            return new PendingDecision(Dunno);
        }

        long now = Now(request);

        string? missingAttribute =
            request.ClientAddress is null ? "client_address"
            : request.ClientName is null ? "client_name"
            : request.Recipient is null ? "recipient"
            : request.Sender is null ? "sender"
            : null;
        if (missingAttribute is not null)
        {
            Log.AttributeMissing(_logger, missingAttribute);
            EngineMetrics.Decided("dunno", "bad request");
            return new PendingDecision(Dunno);
        }
        string clientName = request.ClientName!;
        string recipient = request.Recipient!;
        string sender = request.Sender!;

        if (!ClientAddress.TryParse(request.ClientAddress, out IPAddress address))
        {
            // postgrey 1.37 dies here and takes mail down with it.
            Log.BadClientAddress(_logger, request.ClientAddress!);
            EngineMetrics.Decided("dunno", "bad request");
            return new PendingDecision(Dunno);
        }

        WhitelistSet whitelists = _whitelists.Current;
        if (whitelists.Clients.MatchesName(clientName) || whitelists.Clients.MatchesAddress(address))
        {
            LogAction(request, "pass", "client whitelist");
            return new PendingDecision(Dunno);
        }
        if (whitelists.Recipients.Matches(recipient))
        {
            LogAction(request, "pass", "recipient whitelist");
            return new PendingDecision(Dunno);
        }

        string? clientKey = _options.AutoWhitelistClients > 0 ? TripletKey.ClientKey(address, _options) : null;
        if (_identity is not null)
        {
            // --lookup-by-identity: the key waits for DNS, before the store, so the writer never
            // waits for it and a pending lookup holds up only its own request.
            var identity = new StrongBox<KeyIdentity?>();
            return new PendingDecision(ResolveThenExecuteAsync(address, clientName, sender, recipient, clientKey, now, identity, cancellationToken), address, now, identity);
        }
        ValueTask<DecisionOutcome> commit;
        try
        {
            commit = _store.ExecuteAsync(Input(TripletKey.Build(address, sender, recipient, _options), clientKey, now), DecideInStore, cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return new PendingDecision(OnCommitFailed(ex));
        }
        return new PendingDecision(commit, address, now);
    }

    private DecisionInput Input(string tripletKey, string? clientKey, long now) => new(
        tripletKey,
        clientKey,
        now,
        _options.DelaySeconds,
        _options.RetryWindowSeconds,
        _options.AutoWhitelistClients);

    private async ValueTask<DecisionOutcome> ResolveThenExecuteAsync(IPAddress address, string clientName, string sender, string recipient,
        string? clientKey, long now, StrongBox<KeyIdentity?> identity, CancellationToken cancellationToken)
    {
        KeyIdentity resolved = await _identity!.ResolveAsync(address, clientName, sender, cancellationToken).ConfigureAwait(false);
        identity.Value = resolved; // read by Answer only after this task completes
        string tripletKey = resolved.Form == KeyForm.Subnet
            ? TripletKey.Build(address, sender, recipient, _options)
            : TripletKey.Build(resolved.Domain!, sender, recipient, _options);
        return await _store.ExecuteAsync(Input(tripletKey, clientKey, now), DecideInStore, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The second half of a decision begun by <see cref="Begin"/>, once it
    /// <see cref="PendingDecision.IsCompleted"/>: logs the decision and returns the action text.
    /// Called once per decision.</summary>
    public string Finish(PolicyRequest request, PendingDecision pending)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (pending.Action is { } action)
        {
            return action;
        }
        DecisionOutcome outcome;
        try
        {
#pragma warning disable VSTHRD002 // completed: the caller waited for IsCompleted
            outcome = pending.Commit.GetAwaiter().GetResult();
#pragma warning restore VSTHRD002
        }
        catch (Exception ex)
        {
            return OnCommitFailed(ex);
        }
        return Answer(request, pending, outcome);
    }

    /// <summary>The store failed the decision: DUNNO, said once per outage rather than per request.</summary>
    private string OnCommitFailed(Exception ex)
    {
        // The store logs an outage once when it starts and once when it ends; a line per
        // request here would flood the log for as long as it lasts.
        if (ex is StoreUnavailableException)
        {
            StoreMetrics.Failed("unavailable", ex.Message);
        }
        else
        {
            // Never hold mail hostage to a broken database: let Postfix go on without us.
            OnStoreFailed(ex);
            StoreMetrics.Failed(ex is TimeoutException ? "timeout" : "error", ex.Message);
        }
        EngineMetrics.Decided("dunno", "store error");
        return Dunno;
    }

    private string Answer(PolicyRequest request, PendingDecision pending, DecisionOutcome outcome)
    {
        StoreMetrics.Succeeded();
        if (Volatile.Read(ref _storeFailures) != 0)
        {
            OnStoreWorks();
        }
        return Answer(request, pending.Address!, pending.Now, outcome, pending.Identity?.Value);
    }

    /// <summary>
    /// A full disk or a locked database fails every decision until it is fixed: one line with
    /// the cause when it starts (with its stack trace at most once a minute, and never for the
    /// store's time bound), a count once a minute while it lasts, one line when it ends; not
    /// thousands of stack traces.
    /// </summary>
    private void OnStoreFailed(Exception ex)
    {
        lock (_failureGate)
        {
            long now = _time.GetTimestamp();
            if (_storeFailures++ == 0)
            {
                if (ex is TimeoutException || (_traced && _time.GetElapsedTime(_lastTrace, now) < FailureReportInterval))
                {
                    Log.StoreFailedShort(_logger, ex.Message);
                }
                else
                {
                    Log.StoreFailed(_logger, ex);
                    _traced = true;
                    _lastTrace = now;
                }
                _lastFailureReport = now;
                _unreportedFailures = 0;
                return;
            }
            _unreportedFailures++;
            if (_time.GetElapsedTime(_lastFailureReport, now) >= FailureReportInterval)
            {
                Log.StoreStillFailing(_logger, _unreportedFailures, ex.Message);
                _lastFailureReport = now;
                _unreportedFailures = 0;
            }
        }
    }

    private void OnStoreWorks()
    {
        lock (_failureGate)
        {
            if (_storeFailures > 0)
            {
                Log.StoreWorksAgain(_logger, _storeFailures);
                _storeFailures = 0;
            }
        }
    }

    private static readonly TimeSpan FailureReportInterval = TimeSpan.FromMinutes(1);

    private string Answer(PolicyRequest request, IPAddress address, long now, DecisionOutcome outcome, KeyIdentity? identity)
    {
        if (outcome.Kind == DecisionKind.ClientAwl)
        {
            LogAction(request, "pass", "client AWL");
            return Dunno;
        }
        if (outcome.CorrectedFutureFirstSeen)
        {
            Log.CorrectedFutureFirstSeen(_decisions);
        }
        if (outcome.ReachedAutoWhitelist)
        {
            string client = IsTrue(request.ClientName)
                ? request.ClientName + "[" + ClientAddress.Format(address) + "]"
                : ClientAddress.Format(address);
            Log.Whitelisted(_decisions, client);
            EngineMetrics.ReachedAutoWhitelist();
        }

        string recipient = request.Recipient!;
        if (outcome.Kind == DecisionKind.Greylist)
        {
            string missing = outcome.Missing.ToString(CultureInfo.InvariantCulture);
            bool isNew = outcome.FirstSeen == now;
            LogAction(request, "greylist", isNew ? "new" : "early-retry (" + missing + "s missing)", identity: identity, metricReason: isNew ? "new" : "early-retry");
            // --dry-run: what would have been deferred is logged and counted, and passes.
            return _options.DryRun ? Dunno : _options.GreylistAction + " " + GreylistText(request.EtrnDomain is not null, missing, recipient);
        }

        if (!outcome.LastWasSuccessful && _instances.IsNew(request.Instance))
        {
            long waited = now - outcome.FirstSeen;
            LogAction(request, "pass", "triplet found", waited, identity);
            EngineMetrics.Retried(waited);
            // In --dry-run no mail was delayed: no header saying it was.
            return _options.DryRun ? Dunno : "PREPEND " + Header(waited.ToString(CultureInfo.InvariantCulture));
        }

        LogAction(request, "pass", "triplet found", identity: identity);
        return Dunno;
    }

    /// <summary>--greylist-text with the 4.2.0 prefix (Postfix 2.3+, which sends etrn_domain, and a
    /// text not starting with a digit), then the first %s and the first %r replaced.</summary>
    internal string GreylistText(bool hasEtrnDomain, string missing, string recipient)
    {
        string text = _options.GreylistText;
        if (hasEtrnDomain && !(text.Length > 0 && char.IsAsciiDigit(text[0])))
        {
            text = "4.2.0 " + text;
        }
        text = ReplaceFirst(text, "%s", missing);
        int at = recipient.LastIndexOf('@');
        return ReplaceFirst(text, "%r", at >= 0 ? recipient[(at + 1)..] : recipient);
    }

    /// <summary>--x-greylist-header with %t, %v, %d, %h replaced (first occurrence each, in that order).</summary>
    internal string Header(string waited)
    {
        string text = ReplaceFirst(_options.XGreylistHeader, "%t", waited);
        text = ReplaceFirst(text, "%v", VersionInfo.PostgreyCompatible);
        text = ReplaceFirst(text, "%d", PostgreyDate.Format(_time.GetUtcNow(), _time.LocalTimeZone));
        return ReplaceFirst(text, "%h", _options.Hostname);
    }

    private long Now(PolicyRequest request)
    {
        if (_options.AllowTestTime && request.PolicyTestTime is { } testTime
            && long.TryParse(testTime, NumberStyles.None, CultureInfo.InvariantCulture, out long seconds))
        {
            return seconds;
        }
        return _time.GetUtcNow().ToUnixTimeSeconds();
    }

    private static string ReplaceFirst(string text, string token, string value)
    {
        int i = text.IndexOf(token, StringComparison.Ordinal);
        return i < 0 ? text : string.Concat(text.AsSpan(0, i), value, text.AsSpan(i + token.Length));
    }

    // Perl truthiness: postgrey omits empty attributes, and "0" too.
    private static bool IsTrue(string? value) => !string.IsNullOrEmpty(value) && value != "0";

    private void LogAction(PolicyRequest request, string action, string reason, long? delay = null, KeyIdentity? identity = null, string? metricReason = null)
    {
        EngineMetrics.Decided(action, metricReason ?? reason);
        // postgrey's mylog_action leaves out attributes that are empty (or "0", Perl's false):
        // null here, which the log formatter leaves out with its label. The fields of
        // --lookup-by-identity (key=) and --dry-run (dry_run=yes) come last, each with its own
        // template, so that the default line stays postgrey's byte for byte and scripts that
        // read postgrey's fields do not trip over them.
        string? queueId = OrNull(request.QueueId), clientName = OrNull(request.ClientName), clientAddress = OrNull(request.ClientAddress),
            sender = OrNull(request.Sender), recipient = OrNull(request.Recipient);
        switch (identity, _options.DryRun)
        {
            case (null, false):
                Log.Decision(_decisions, queueId, action, reason, delay, clientName, clientAddress, sender, recipient);
                break;
            case (null, true):
                Log.DryRunDecision(_decisions, queueId, action, reason, delay, clientName, clientAddress, sender, recipient, "yes");
                break;
            case ({ } key, false):
                Log.DecisionWithKey(_decisions, queueId, action, reason, delay, clientName, clientAddress, sender, recipient, key.Describe());
                break;
            case ({ } key, true):
                Log.DryRunDecisionWithKey(_decisions, queueId, action, reason, delay, clientName, clientAddress, sender, recipient, key.Describe(), "yes");
                break;
        }

        static string? OrNull(string? value) => IsTrue(value) ? value : null;
    }

    private static partial class Log
    {
        // postgrey's line, each field a property: rendered, with the null ones left out,
        // "[QUEUEID: ]action=A, reason=R[, delay=N], client_name=.., client_address=.., sender=.., recipient=..".
        [LoggerMessage(3001, LogLevel.Information,
            "{QueueId}: action={Action}, reason={Reason}, delay={Delay}, client_name={ClientName}, client_address={ClientAddress}, sender={Sender}, recipient={Recipient}",
            EventName = "Decision")]
        public static partial void Decision(ILogger logger, string? queueId, string action, string reason, long? delay,
            string? clientName, string? clientAddress, string? sender, string? recipient);

        [LoggerMessage(3008, LogLevel.Information,
            "{QueueId}: action={Action}, reason={Reason}, delay={Delay}, client_name={ClientName}, client_address={ClientAddress}, sender={Sender}, recipient={Recipient}, key={Key}",
            EventName = "DecisionWithKey")]
        public static partial void DecisionWithKey(ILogger logger, string? queueId, string action, string reason, long? delay,
            string? clientName, string? clientAddress, string? sender, string? recipient, string key);

        [LoggerMessage(3009, LogLevel.Information,
            "{QueueId}: action={Action}, reason={Reason}, delay={Delay}, client_name={ClientName}, client_address={ClientAddress}, sender={Sender}, recipient={Recipient}, dry_run={DryRun}",
            EventName = "DryRunDecision")]
        public static partial void DryRunDecision(ILogger logger, string? queueId, string action, string reason, long? delay,
            string? clientName, string? clientAddress, string? sender, string? recipient, string dryRun);

        [LoggerMessage(3010, LogLevel.Information,
            "{QueueId}: action={Action}, reason={Reason}, delay={Delay}, client_name={ClientName}, client_address={ClientAddress}, sender={Sender}, recipient={Recipient}, key={Key}, dry_run={DryRun}",
            EventName = "DryRunDecisionWithKey")]
        public static partial void DryRunDecisionWithKey(ILogger logger, string? queueId, string action, string reason, long? delay,
            string? clientName, string? clientAddress, string? sender, string? recipient, string key, string dryRun);

        [LoggerMessage(3002, LogLevel.Warning, "whitelisted: {Client}", EventName = "Whitelisted")]
        public static partial void Whitelisted(ILogger logger, string client);

        [LoggerMessage(3003, LogLevel.Warning, "correcting date for first seen in the future!", EventName = "FutureFirstSeen")]
        public static partial void CorrectedFutureFirstSeen(ILogger logger);

        [LoggerMessage(3004, LogLevel.Warning, "attribute missing: {Name}", EventName = "AttributeMissing")]
        public static partial void AttributeMissing(ILogger logger, string name);

        [LoggerMessage(3005, LogLevel.Warning, "can't parse client_address: '{Address}'; answering DUNNO", EventName = "BadClientAddress")]
        public static partial void BadClientAddress(ILogger logger, string address);

        [LoggerMessage(3006, LogLevel.Warning, "unrecognized request type: '{Request}'; answering DUNNO", EventName = "UnrecognizedRequest")]
        public static partial void UnrecognizedRequest(ILogger logger, string request);

        [LoggerMessage(3007, LogLevel.Error, "database error, answering DUNNO so that mail is not held up", EventName = "StoreFailed")]
        public static partial void StoreFailed(ILogger logger, Exception exception);

        [LoggerMessage(3020, LogLevel.Error, "database error, answering DUNNO so that mail is not held up: {Reason}", EventName = "StoreFailedShort")]
        public static partial void StoreFailedShort(ILogger logger, string reason);

        [LoggerMessage(3021, LogLevel.Error, "database still failing: {Count} more requests answered DUNNO (last error: {Reason})", EventName = "StoreStillFailing")]
        public static partial void StoreStillFailing(ILogger logger, long count, string reason);

        [LoggerMessage(3022, LogLevel.Warning, "database works again, after {Count} requests answered DUNNO", EventName = "StoreWorksAgain")]
        public static partial void StoreWorksAgain(ILogger logger, long count);
    }
}

/// <summary>A decision between <see cref="GreylistEngine.Begin"/> and
/// <see cref="GreylistEngine.Finish"/>: answered already (whitelists, a bad request), or
/// waiting for the store's commit.</summary>
public readonly struct PendingDecision
{
    internal PendingDecision(string action) => Action = action;

    internal PendingDecision(ValueTask<DecisionOutcome> commit, IPAddress address, long now, StrongBox<KeyIdentity?>? identity = null)
    {
        Commit = commit;
        Address = address;
        Now = now;
        Identity = identity;
    }

    /// <summary>Decided without the store.</summary>
    internal string? Action { get; }

    internal ValueTask<DecisionOutcome> Commit { get; }

    internal IPAddress? Address { get; }

    internal long Now { get; }

    /// <summary>--lookup-by-identity: the form the key took, set before the commit completes.</summary>
    internal StrongBox<KeyIdentity?>? Identity { get; }

    /// <summary>True when <see cref="GreylistEngine.Finish"/> may run.</summary>
    public bool IsCompleted => Action is not null || Commit.IsCompleted;

    /// <summary>Runs <paramref name="continuation"/> where the commit completes (the store's
    /// thread, or a pool thread): it must only hand the decision over, never finish it there.</summary>
    public void OnCompleted(Action continuation)
    {
        ArgumentNullException.ThrowIfNull(continuation);
        if (Action is not null)
        {
            continuation();
            return;
        }
        Commit.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(continuation);
    }
}
