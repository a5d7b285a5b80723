using System.Collections.Concurrent;
using System.Net;
using ARSoft.Tools.Net;
using ARSoft.Tools.Net.Dns;

namespace Postgrey.Identity;

/// <summary>One answer as the cache keeps it: the records of the asked type (after CNAMEs),
/// or none (NXDOMAIN or no data: a void lookup in RFC 7208's words).</summary>
public sealed record DnsAnswer(IReadOnlyList<DnsRecordBase> Records, long ExpiresAt)
{
    public bool IsVoid => Records.Count == 0;
}

/// <summary>
/// A stub resolver over ARSoft.Tools.Net's <see cref="DnsClient"/> with a cache that honours
/// TTLs: an answer is kept for its smallest record TTL, a negative one for its SOA's negative
/// TTL (RFC 2308), both capped. A failure (timeout, SERVFAIL, garbage) is not cached and
/// throws, which the SPF validator turns into temperror. Concurrent asks for one name share
/// one query.
/// </summary>
public sealed class DnsCache : IDisposable
{
    /// <summary>No answer is kept longer, whatever its TTL says.</summary>
    public const int MaxTtlSeconds = 86400;

    /// <summary>A negative answer is kept at most this long (RFC 2308 suggests 1 to 3 hours).</summary>
    public const int MaxNegativeTtlSeconds = 3600;

    /// <summary>How many answers are kept; past it, expired ones go, then all (a crude bound
    /// against a flood of unique names).</summary>
    public const int MaxEntries = 100_000;

    private const int MaxCnameHops = 8;

    private readonly DnsClient _client;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<(string Name, RecordType Type), DnsAnswer> _answers = new();
    private readonly ConcurrentDictionary<(string Name, RecordType Type), Task<DnsAnswer>> _pending = new();

    /// <param name="servers">the resolvers to ask; empty: the system's</param>
    /// <param name="port">their port</param>
    /// <param name="queryTimeout">one query's longest wait</param>
    /// <param name="time">the clock for TTLs</param>
    public DnsCache(IReadOnlyList<IPAddress> servers, int port, TimeSpan queryTimeout, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(servers);
        ArgumentNullException.ThrowIfNull(time);
        IEnumerable<IPAddress> asked = servers.Count > 0 ? servers : DnsClient.GetLocalConfiguredDnsServers();
        // UDP first, TCP when an answer is truncated (large TXT records).
        _client = new DnsClient(asked, [new UdpClientTransport(port), new TcpClientTransport(port)], disposeTransport: true,
            queryTimeout: (int)Math.Clamp(queryTimeout.TotalMilliseconds, 1, int.MaxValue));
        _time = time;
    }

    /// <summary>How many answers are cached (for tests and diagnostics).</summary>
    public int Count => _answers.Count;

    /// <summary>The records of <paramref name="type"/> for <paramref name="name"/>, following CNAMEs.</summary>
    /// <exception cref="DnsLookupException">no usable answer (timeout, SERVFAIL, a broken message)</exception>
    public async Task<DnsAnswer> LookupAsync(DomainName name, RecordType type, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(name);
        var key = (name.ToString(false).ToLowerInvariant(), type);
        long now = _time.GetUtcNow().ToUnixTimeSeconds();
        if (_answers.TryGetValue(key, out DnsAnswer? cached) && cached.ExpiresAt > now)
        {
            return cached;
        }
        // The entry is in _pending before its query starts, so its removal always finds it: with
        // GetOrAdd's factory, a query finishing before the add left a finished task there for
        // good, and the name was never asked again (the TTL test caught it, once in a while).
        while (true)
        {
            if (_pending.TryGetValue(key, out Task<DnsAnswer>? shared))
            {
                return await shared.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            var mine = new TaskCompletionSource<DnsAnswer>(TaskCreationOptions.RunContinuationsAsynchronously);
            if (_pending.TryAdd(key, mine.Task))
            {
                _ = QueryAndStoreAsync(name, type, key, mine);
                return await mine.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task QueryAndStoreAsync(DomainName name, RecordType type, (string, RecordType) key, TaskCompletionSource<DnsAnswer> result)
    {
        try
        {
            // Not the caller's token: a shared query finishes for whoever waits on it next; the
            // client's own query timeout bounds it.
            DnsAnswer answer = await QueryAsync(name, type, hops: 0).ConfigureAwait(false);
            if (_answers.Count >= MaxEntries)
            {
                Prune();
            }
            _answers[key] = answer;
            _pending.TryRemove(new KeyValuePair<(string, RecordType), Task<DnsAnswer>>(key, result.Task));
            result.SetResult(answer);
        }
        catch (Exception ex)
        {
            _pending.TryRemove(new KeyValuePair<(string, RecordType), Task<DnsAnswer>>(key, result.Task));
            result.SetException(ex);
        }
    }

    private async Task<DnsAnswer> QueryAsync(DomainName name, RecordType type, int hops)
    {
        DnsMessage? message;
        try
        {
            message = await _client.ResolveAsync(name, type, RecordClass.INet, null, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            throw new DnsLookupException($"{name}/{type}: {ex.Message}", ex);
        }
        if (message is null)
        {
            throw new DnsLookupException($"{name}/{type}: no answer");
        }
        if (message.ReturnCode is not (ReturnCode.NoError or ReturnCode.NxDomain))
        {
            throw new DnsLookupException($"{name}/{type}: {message.ReturnCode}");
        }
        long now = _time.GetUtcNow().ToUnixTimeSeconds();

        // Follow a CNAME chain within the answer; ask for its end if the answer stops short.
        DomainName current = name;
        int ttl = MaxTtlSeconds;
        for (int i = 0; i <= MaxCnameHops; i++)
        {
            var records = message.AnswerRecords.Where(r => r.RecordType == type && r.RecordClass == RecordClass.INet && r.Name.Equals(current)).ToList();
            if (records.Count > 0)
            {
                ttl = Math.Min(ttl, records.Min(r => r.TimeToLive));
                return new DnsAnswer(records, now + Math.Clamp(ttl, 0, MaxTtlSeconds));
            }
            CNameRecord? cname = type == RecordType.CName ? null
                : message.AnswerRecords.OfType<CNameRecord>().FirstOrDefault(r => r.Name.Equals(current));
            if (cname is null)
            {
                break;
            }
            ttl = Math.Min(ttl, cname.TimeToLive);
            current = cname.CanonicalName;
        }
        if (!current.Equals(name) && hops < MaxCnameHops)
        {
            DnsAnswer rest = await QueryAsync(current, type, hops + 1).ConfigureAwait(false);
            return rest with { ExpiresAt = Math.Min(rest.ExpiresAt, now + Math.Clamp(ttl, 0, MaxTtlSeconds)) };
        }

        // Negative: as long as the SOA in the authority section says, else not at all.
        SoaRecord? soa = message.AuthorityRecords.OfType<SoaRecord>().FirstOrDefault();
        int negative = soa is null ? 0 : Math.Min(soa.TimeToLive, soa.NegativeCachingTTL);
        return new DnsAnswer([], now + Math.Clamp(negative, 0, MaxNegativeTtlSeconds));
    }

    private void Prune()
    {
        long now = _time.GetUtcNow().ToUnixTimeSeconds();
        foreach (var entry in _answers)
        {
            if (entry.Value.ExpiresAt <= now)
            {
                _answers.TryRemove(entry.Key, out _);
            }
        }
        if (_answers.Count >= MaxEntries)
        {
            _answers.Clear();
        }
    }

    public void Dispose() => ((IDisposable)_client).Dispose();
}

/// <summary>A DNS question that got no usable answer.</summary>
public sealed class DnsLookupException : Exception
{
    public DnsLookupException()
    {
    }

    public DnsLookupException(string message)
        : base(message)
    {
    }

    public DnsLookupException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
