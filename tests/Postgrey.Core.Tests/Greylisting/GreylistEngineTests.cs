using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Postgrey.Core.Greylisting;
using Postgrey.Testing;

namespace Postgrey.Core.Tests.Greylisting;

/// <summary>
/// postgrey's decision, step by step, with a fake clock, over each real store: SQLite in a temp
/// directory and PostgreSQL on a private cluster (started on the first PostgreSQL case; without
/// PostgreSQL those cases skip, or fail under CI). Tests of SQLite's own faults run on SQLite;
/// PostgreSQL's are in Postgrey.Storage.PostgreSql.Tests.
/// </summary>
public sealed class GreylistEngineTests(PostgresCluster cluster) : IClassFixture<PostgresCluster>
{
    private const string Greylisted = "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html";
    private const string Attributes = "client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=b@example.org";

    public static TheoryData<StoreKind> Stores => [StoreKind.Sqlite, StoreKind.PostgreSql];

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_NewTriplet_IsGreylisted(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        Assert.Equal(Greylisted, await h.AskAsync());
        Assert.Equal("action=greylist, reason=new, " + Attributes, h.DecisionLines.Single());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_EarlyRetry_IsGreylistedWithTheSecondsMissing(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync();
        h.Advance(100);
        Assert.Equal(Greylisted, await h.AskAsync());
        Assert.Equal("action=greylist, reason=early-retry (200s missing), " + Attributes, h.DecisionLines.Last());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_RetryAfterTheDelay_PassesWithTheHeader(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync(instance: "A1");
        h.Advance(312);
        string answer = await h.AskAsync(instance: "A2");
        Assert.Equal("PREPEND X-Greylist: delayed 312 seconds by postgrey-1.37 at mx1.example.org; Sat, 28 Nov 2026 03:25:12 UTC", answer);
        Assert.Equal("action=pass, reason=triplet found, delay=312, " + Attributes, h.DecisionLines.Last());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_ExactlyAtTheDelay_Passes(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync();
        h.Advance(300);
        Assert.StartsWith("PREPEND ", await h.AskAsync(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_AfterSuccess_AnswersDunnoWithoutHeader(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync();
        h.Advance(400);
        await h.AskAsync(instance: "m1");
        h.Advance(10);
        Assert.Equal("DUNNO", await h.AskAsync(instance: "m2"));
        Assert.Equal("action=pass, reason=triplet found, " + Attributes, h.DecisionLines.Last());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_SameMessageSecondRecipient_GetsNoSecondHeader(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync(recipient: "one@example.org");
        await h.AskAsync(recipient: "two@example.org");
        h.Advance(400);
        Assert.StartsWith("PREPEND ", await h.AskAsync(recipient: "one@example.org", instance: "msg1"), StringComparison.Ordinal);
        Assert.Equal("DUNNO", await h.AskAsync(recipient: "two@example.org", instance: "msg1"));
        Assert.EndsWith("recipient=two@example.org", h.DecisionLines.Last(), StringComparison.Ordinal);
        Assert.Contains("reason=triplet found, client_name", h.DecisionLines.Last(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_NoInstance_CountsAsNew(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync(recipient: "one@example.org");
        await h.AskAsync(recipient: "two@example.org");
        h.Advance(400);
        Assert.StartsWith("PREPEND ", await h.AskAsync(recipient: "one@example.org"), StringComparison.Ordinal);
        Assert.StartsWith("PREPEND ", await h.AskAsync(recipient: "two@example.org"), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_FirstRetryAfterTheRetryWindow_StartsAgain(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { RetryWindowSeconds = 3600 });
        await h.AskAsync();
        h.Advance(3601);
        Assert.Equal(Greylisted, await h.AskAsync());
        Assert.Contains("reason=new,", h.DecisionLines.Last(), StringComparison.Ordinal);
        h.Advance(299);
        await h.AskAsync();
        Assert.Contains("early-retry (1s missing)", h.DecisionLines.Last(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_FirstSeenInTheFuture_IsCorrected(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { AllowTestTime = true });
        await h.AskAsync(testTime: 5000);
        Assert.Equal("DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", await h.AskAsync(testTime: 1000));
        Assert.Contains("correcting date for first seen in the future!", h.Logs.Messages());
        Assert.Contains("reason=new,", h.DecisionLines.Last(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_TestTime_IsIgnoredUnlessAllowed(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync(testTime: 1000);
        // 10 000 s "later" by the request's clock, but the server's clock moved by 1 s only.
        h.Advance(1);
        Assert.Equal(Greylisted, await h.AskAsync(testTime: 11000));
        Assert.Contains("early-retry (299s missing)", h.DecisionLines.Last(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_TestTime_IsUsedWhenAllowed(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { AllowTestTime = true });
        await h.AskAsync(testTime: 1000);
        Assert.StartsWith("PREPEND X-Greylist: delayed 400 seconds", await h.AskAsync(testTime: 1400), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_DelayZero_MeansZero(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { DelaySeconds = 0 });
        Assert.StartsWith("PREPEND X-Greylist: delayed 0 seconds", await h.AskAsync(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_SubnetNeighbour_SharesTheTriplet(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync(clientAddress: "192.0.2.7");
        h.Advance(301);
        Assert.StartsWith("PREPEND", await h.AskAsync(clientAddress: "192.0.2.200"), StringComparison.Ordinal);
        Assert.Equal(Greylisted, await h.AskAsync(clientAddress: "192.0.3.7"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_LookupByHost_SeparatesNeighbours(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { LookupByHost = true });
        await h.AskAsync(clientAddress: "192.0.2.7");
        h.Advance(301);
        Assert.Equal(Greylisted, await h.AskAsync(clientAddress: "192.0.2.8"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_AutoWhitelist_AfterFivePassesAnHourApart(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { AutoWhitelistClients = 5 });
        for (int i = 0; i < 5; i++)
        {
            await h.AskAsync(recipient: $"r{i}@example.org");
            h.Advance(301);
            Assert.StartsWith("PREPEND", await h.AskAsync(recipient: $"r{i}@example.org"), StringComparison.Ordinal);
            h.Advance(3600);
        }
        Assert.Contains("whitelisted: mx.example.net[192.0.2.7]", h.Logs.Messages());
        Assert.Equal("DUNNO", await h.AskAsync(recipient: "new@example.org"));
        Assert.Equal("action=pass, reason=client AWL, client_name=mx.example.net, client_address=192.0.2.7, sender=a@example.net, recipient=new@example.org", h.DecisionLines.Last());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_AutoWhitelist_CountsOnePassPerHour(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { AutoWhitelistClients = 2 });
        await h.AskAsync(recipient: "r1@example.org");
        await h.AskAsync(recipient: "r2@example.org");
        h.Advance(301);
        await h.AskAsync(recipient: "r1@example.org");
        await h.AskAsync(recipient: "r2@example.org"); // same hour: not counted
        Assert.Equal("DEFER_IF_PERMIT 4.2.0 Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", await h.AskAsync(recipient: "r3@example.org"));
        Assert.DoesNotContain(h.Logs.Messages(), m => m.StartsWith("whitelisted:", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_AutoWhitelistWithoutClientName_LogsTheAddressOnly(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { AutoWhitelistClients = 1 });
        await h.AskAsync(clientName: "unknown", clientAddress: "2001:db8::7");
        h.Advance(301);
        await h.AskAsync(clientName: "", clientAddress: "2001:db8::7");
        Assert.Contains("whitelisted: 2001:DB8:0:0:0:0:0:7", h.Logs.Messages());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_AutoWhitelistDisabled_NeverWhitelists(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { AutoWhitelistClients = 0 });
        for (int i = 0; i < 3; i++)
        {
            await h.AskAsync(recipient: $"r{i}@example.org");
            h.Advance(301);
            await h.AskAsync(recipient: $"r{i}@example.org");
            h.Advance(3600);
        }
        Assert.Equal(Greylisted, await h.AskAsync(recipient: "new@example.org"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_ClientWhitelistByName_PassesAtOnce(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, clientWhitelist: "example.net\n");
        Assert.Equal("DUNNO", await h.AskAsync(clientName: "MX.Example.NET"));
        Assert.StartsWith("action=pass, reason=client whitelist, client_name=MX.Example.NET,", h.DecisionLines.Last(), StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_ClientWhitelistByAddress_PassesAtOnce(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, clientWhitelist: "192.0.2.0/28\n");
        Assert.Equal("DUNNO", await h.AskAsync(clientAddress: "192.0.2.15"));
        Assert.Equal(Greylisted, await h.AskAsync(clientAddress: "192.0.2.16"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_RecipientWhitelist_PassesAtOnce(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, recipientWhitelist: "postmaster@\n");
        Assert.Equal("DUNNO", await h.AskAsync(recipient: "Postmaster@example.org"));
        Assert.StartsWith("action=pass, reason=recipient whitelist,", h.DecisionLines.Last(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("client_address")]
    [InlineData("client_name")]
    [InlineData("sender")]
    [InlineData("recipient")]
    public async Task Decide_MissingAttribute_AnswersDunnoAndWarns(string missing)
    {
        // Answered before any store is asked: one store is enough.
        using var h = await EngineHarness.CreateAsync(StoreKind.Sqlite, cluster);
        string request = string.Join('\n', Requests.Policy().Split('\n').Where(l => !l.StartsWith(missing + "=", StringComparison.Ordinal)));
        Assert.Equal("DUNNO", await h.AskAsync(request));
        Assert.Contains(h.Logs.Entries, e => e.Level == LogLevel.Warning && e.Message == "attribute missing: " + missing);
    }

    [Theory]
    [InlineData("")]
    [InlineData("unknown")]
    [InlineData("999.1.1.1")]
    public async Task Decide_BadClientAddress_AnswersDunno(string address)
    {
        // Answered before any store is asked: one store is enough.
        using var h = await EngineHarness.CreateAsync(StoreKind.Sqlite, cluster);
        Assert.Equal("DUNNO", await h.AskAsync(clientAddress: address));
        Assert.Contains(h.Logs.Entries, e => e.Level == LogLevel.Warning && e.Message.StartsWith("can't parse client_address", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_OtherRequestType_AnswersDunno(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        Assert.Equal("DUNNO", await h.AskAsync("request=junk\nclient_address=1.2.3.4\n\n"));
        Assert.Contains(h.Logs.Entries, e => e.Level == LogLevel.Warning && e.Message.StartsWith("unrecognized request type: 'junk'", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_WithoutEtrnDomain_HasNo420Prefix(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        Assert.Equal("DEFER_IF_PERMIT Greylisted, see http://postgrey.schweikert.ch/help/example.org.html", await h.AskAsync(etrnDomain: false));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_CustomTextAndAction_AreSubstituted(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { GreylistAction = "451", GreylistText = "wait %s seconds for %r (%s %r)" });
        Assert.Equal("451 4.2.0 wait 300 seconds for Example.ORG (%s %r)", await h.AskAsync(recipient: "b@x@Example.ORG"));
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_TextStartingWithADigit_GetsNoPrefix(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { GreylistText = "4.7.1 later" });
        Assert.Equal("DEFER_IF_PERMIT 4.7.1 later", await h.AskAsync());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task Decide_CustomHeader_IsSubstitutedOncePerToken(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster, new GreylistOptions { DelaySeconds = 0, Hostname = "h", XGreylistHeader = "X-G: %t/%v/%h/%d/%t" });
        Assert.Equal("PREPEND X-G: 0/1.37/h/Sat, 28 Nov 2026 03:20:00 UTC/%t", await h.AskAsync());
    }

    [Fact]
    public async Task Decide_SameTripletWithinOneSecond_WritesNothing()
    {
        using var h = await EngineHarness.CreateAsync(StoreKind.Sqlite, cluster);
        await h.AskAsync();
        // SQLite itself skips rewriting identical bytes, so count the UPDATE statements instead.
        using var db = new SqliteConnection($"Data Source={h.DatabasePath};Pooling=False");
        db.Open();
        using var sql = db.CreateCommand();
        sql.CommandText = "CREATE TABLE updates (key TEXT); "
            + "CREATE TRIGGER count_updates AFTER UPDATE ON triplets BEGIN INSERT INTO updates VALUES (new.key); END;";
        sql.ExecuteNonQuery();
        sql.CommandText = "SELECT count(*) FROM updates";

        Assert.Equal(Greylisted, await h.AskAsync());
        Assert.Equal("action=greylist, reason=new, " + Attributes, h.DecisionLines.Last()); // as postgrey: first seen = now
        Assert.Equal(0L, sql.ExecuteScalar());

        h.Advance(1);
        Assert.Equal(Greylisted, await h.AskAsync());
        Assert.Equal(1L, sql.ExecuteScalar());
        sql.CommandText = "SELECT last_seen - first_seen FROM triplets";
        Assert.Equal(1L, sql.ExecuteScalar());
    }

    [Theory]
    [MemberData(nameof(Stores))]
    public async Task DecisionLine_QueueIdAndEmptyFields_AsPostgreyWritesThem(StoreKind store)
    {
        using var h = await EngineHarness.CreateAsync(store, cluster);
        await h.AskAsync(queueId: "4BF2A1C3D", clientName: "", sender: "");
        Assert.Equal("4BF2A1C3D: action=greylist, reason=new, client_address=192.0.2.7, recipient=b@example.org", h.DecisionLines.Last());
        h.Advance(1);
        await h.AskAsync(queueId: "0", clientName: "0", sender: "");
        Assert.Equal("action=greylist, reason=early-retry (299s missing), client_address=192.0.2.7, recipient=b@example.org", h.DecisionLines.Last());
    }

    [Fact]
    public async Task Decide_BrokenDatabase_AnswersDunnoAndLogsAnError()
    {
        using var h = await EngineHarness.CreateAsync(StoreKind.Sqlite, cluster);
        await h.AskAsync();
        using (var other = new SqliteConnection($"Data Source={h.DatabasePath};Pooling=False"))
        {
            other.Open();
            using var drop = other.CreateCommand();
            drop.CommandText = "DROP TABLE triplets";
            drop.ExecuteNonQuery();
        }
        Assert.Equal("DUNNO", await h.AskAsync(recipient: "c@example.org"));
        Assert.Contains(h.Logs.Entries, e => e.Level == LogLevel.Error && e.Exception is SqliteException);
    }

    [Fact]
    public async Task Decide_DatabaseLockedByAnotherProgram_AnswersDunnoThenRecovers()
    {
        using var h = await EngineHarness.CreateAsync(StoreKind.Sqlite, cluster, busyTimeout: TimeSpan.FromMilliseconds(200));
        using (var admin = new SqliteConnection($"Data Source={h.DatabasePath};Pooling=False"))
        {
            admin.Open();
            using var hold = admin.CreateCommand();
            hold.CommandText = "BEGIN EXCLUSIVE"; // e.g. an admin's sqlite3 session
            hold.ExecuteNonQuery();
            Assert.Equal("DUNNO", await h.AskAsync());
            Assert.Contains(h.Logs.Entries, e => e.Level == LogLevel.Error && e.Message.Contains("the database is locked by another process", StringComparison.Ordinal));
            hold.CommandText = "ROLLBACK";
            hold.ExecuteNonQuery();
        }
        Assert.Equal(Greylisted, await h.AskAsync());
    }
    [Fact]
    public async Task Decide_DatabaseLockedForLong_SaysItOnceThenOnceAMinute_AndWhenItWorksAgain()
    {
        using var h = await EngineHarness.CreateAsync(StoreKind.Sqlite, cluster, busyTimeout: TimeSpan.FromMilliseconds(200));
        using (var admin = new SqliteConnection($"Data Source={h.DatabasePath};Pooling=False"))
        {
            admin.Open();
            using var hold = admin.CreateCommand();
            hold.CommandText = "BEGIN EXCLUSIVE";
            hold.ExecuteNonQuery();
            string[] answers = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => h.AskAsync(recipient: $"r{i}@example.org")));
            Assert.All(answers, a => Assert.Equal("DUNNO", a));
            h.Advance(61);
            Assert.Equal("DUNNO", await h.AskAsync());
            hold.CommandText = "ROLLBACK";
            hold.ExecuteNonQuery();
        }
        Assert.Equal(Greylisted, await h.AskAsync());

        var errors = h.Logs.Entries.Where(e => e.Category == typeof(GreylistEngine).FullName).ToList();
        Assert.Equal(3, errors.Count);
        // A lock held elsewhere is no fault of ours: said without a stack trace.
        Assert.StartsWith("database error, answering DUNNO so that mail is not held up: the database is locked by another process (waited ", errors[0].Message, StringComparison.Ordinal);
        Assert.Null(errors[0].Exception);
        Assert.StartsWith("database still failing: 200 more requests answered DUNNO (last error: the database is locked by another process", errors[1].Message, StringComparison.Ordinal);
        Assert.Null(errors[1].Exception);
        Assert.Equal("database works again, after 201 requests answered DUNNO", errors[2].Message);
    }
}
