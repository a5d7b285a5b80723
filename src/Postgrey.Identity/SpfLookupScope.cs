using ARSoft.Tools.Net;
using ARSoft.Tools.Net.Dns;

namespace Postgrey.Identity;

/// <summary>
/// The resolver one SPF check sees: the shared cache, plus the bounds of RFC 7208 section 4.6.4
/// that ARSoft.Tools.Net's validator does not keep itself. It counts void lookups (more than
/// two is permerror) and every query (a safety bound well above the ten DNS mechanisms, which
/// the validator counts, with their MX and PTR follow-ups). Past a bound, every further query
/// fails, so the check ends at once.
/// </summary>
internal sealed class SpfLookupScope : IDnsResolver
{
    /// <summary>RFC 7208 4.6.4: more than two void lookups is permerror.</summary>
    public const int VoidLookupLimit = 2;

    /// <summary>10 DNS mechanisms, each MX or PTR with up to 10 address look-ups, and the records
    /// themselves would allow more than 100; no real policy comes near this.</summary>
    public const int QueryLimit = 60;

    private readonly DnsCache _cache;
    private int _voids;
    private int _queries;

    public SpfLookupScope(DnsCache cache)
    {
        _cache = cache;
    }

    /// <summary>A bound was crossed: the result is permerror, whatever the validator made of it.</summary>
    public bool LimitExceeded => Volatile.Read(ref _voids) > VoidLookupLimit || Volatile.Read(ref _queries) > QueryLimit;

    /// <summary>What failed last (for the once-an-hour log line).</summary>
    public string? LastFailure { get; private set; }

    public async Task<List<T>> ResolveAsync<T>(DomainName name, RecordType recordType = RecordType.A, RecordClass recordClass = RecordClass.INet, CancellationToken token = default)
        where T : DnsRecordBase
    {
        if (Interlocked.Increment(ref _queries) > QueryLimit || Volatile.Read(ref _voids) > VoidLookupLimit)
        {
            throw new DnsLookupException("lookup limit exceeded");
        }
        try
        {
            DnsAnswer answer = await _cache.LookupAsync(name, recordType, token).ConfigureAwait(false);
            if (answer.IsVoid && Interlocked.Increment(ref _voids) > VoidLookupLimit)
            {
                throw new DnsLookupException("more than " + VoidLookupLimit + " void lookups");
            }
            return answer.Records.OfType<T>().ToList();
        }
        catch (DnsLookupException ex)
        {
            LastFailure = ex.Message;
            throw;
        }
    }

    public List<T> Resolve<T>(DomainName name, RecordType recordType = RecordType.A, RecordClass recordClass = RecordClass.INet)
        where T : DnsRecordBase =>
        throw new NotSupportedException("the SPF check is asynchronous only");

    public void ClearCache()
    {
    }

    public void Dispose()
    {
    }
}
