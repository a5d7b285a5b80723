using System.Buffers.Binary;
using Postgrey.Migration.BerkeleyDb;
using Postgrey.Testing;

namespace Postgrey.Migration.Tests;

/// <summary>The B-tree reader over files written by Debian's postgrey (BerkeleyDB 5.3), with
/// db_dump as the oracle, and over damaged copies of them.</summary>
public sealed class BtreeFileTests(PostgreyRuns runs) : IDisposable
{
    private readonly TempDirectory _dir = new();

    public static TheoryData<string> FlagSets => [.. Fixtures.FlagSets.Keys];

    public void Dispose() => _dir.Dispose();

    [Theory]
    [MemberData(nameof(FlagSets))]
    public async Task ReadAll_PostgreysFiles_SamePairsAsDbDump(string flagSet)
    {
        string dbdir = await runs.DbdirAsync(flagSet);
        foreach (string name in new[] { PostgreyDatabase.TripletsFileName, PostgreyDatabase.ClientsFileName })
        {
            string file = Path.Combine(dbdir, name);
            var expected = Fixtures.DbDumpPairs(file);
            var actual = BtreeFile.ReadAll(file);
            Assert.Equal(Fixtures.AsLines(expected), Fixtures.AsLines(actual));
            // In key order, as db_dump prints them.
            Assert.Equal(expected.Select(p => Convert.ToHexString(p.Key)), actual.Select(p => Convert.ToHexString(p.Key)));
        }
        Assert.NotEmpty(BtreeFile.ReadAll(Path.Combine(dbdir, PostgreyDatabase.TripletsFileName)));
    }

    [Fact]
    public async Task ReadAll_TreeOfSeveralLevels_SamePairsAsDbDump()
    {
        string file = Path.Combine(await runs.DbdirAsync("default"), PostgreyDatabase.TripletsFileName);
        byte[] bytes = await File.ReadAllBytesAsync(file, TestContext.Current.CancellationToken);
        int pageSize = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(20));
        int root = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(88));
        Assert.Equal(3, bytes[(root * pageSize) + 25]); // the root is an internal page: the descent is exercised
        var pairs = BtreeFile.ReadAll(file);
        Assert.True(pairs.Count >= PostgreyRuns.Bulk, $"{pairs.Count} pairs");
        Assert.Equal(Fixtures.AsLines(Fixtures.DbDumpPairs(file)), Fixtures.AsLines(pairs));
    }

    [Theory]
    [InlineData("1234")]
    [InlineData("4321")]
    public async Task ReadAll_EitherByteOrder_SamePairsAsDbDump(string byteOrder)
    {
        string source = Path.Combine(await runs.DbdirAsync("default"), PostgreyDatabase.TripletsFileName);
        var (_, dump, _) = Fixtures.Run(Fixtures.DbDumpPath, ["-p", source]);
        string file = _dir.File("ordered.db");
        Fixtures.DbLoad(file, dump, "-c", $"db_lorder={byteOrder}");
        byte[] head = await File.ReadAllBytesAsync(file, TestContext.Current.CancellationToken);
        Assert.Equal(byteOrder == "4321" ? 0x053162u : 0x62310500u, BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(12)));
        Assert.Equal(Fixtures.AsLines(Fixtures.DbDumpPairs(source)), Fixtures.AsLines(BtreeFile.ReadAll(file)));
    }

    /// <summary>Keys and values longer than a quarter page live on overflow pages, chained when
    /// longer than a page. postgrey cannot write such keys (it cuts request lines at 512 bytes),
    /// so db_load makes the file.</summary>
    [Fact]
    public void ReadAll_OverflowItems_SamePairsAsDbDump()
    {
        string file = OverflowFile();
        var pairs = BtreeFile.ReadAll(file);
        Assert.Contains(pairs, p => p.Key.Length > 9000);
        Assert.Contains(pairs, p => p.Value.Length >= 5000);
        Assert.Equal(Fixtures.AsLines(Fixtures.DbDumpPairs(file)), Fixtures.AsLines(pairs));
    }

    private string OverflowFile()
    {
        Requires.Program(Fixtures.DbLoadPath, "db-util");
        Requires.Program(Fixtures.DbDumpPath, "db-util");
        var pairs = Enumerable.Range(0, 300).Select(i => ($"192.0.2.0/s{i}@example.net/r@example.org", $"{i},{i + 1}")).ToList();
        pairs.Add(("192.0.2.0/a@example.net/" + new string('x', 1500), "1,2"));
        pairs.Add(("192.0.2.0/b@example.net/" + new string('y', 9000), "3,4"));
        pairs.Add(("192.0.2.0/c@example.net/z", new string('7', 5000)));
        string file = _dir.File("overflow.db");
        Fixtures.DbLoad(file, Fixtures.Dump([.. pairs.OrderBy(p => p.Item1, StringComparer.Ordinal)]));
        return file;
    }

    [Fact]
    public async Task ReadAll_EveryTruncation_ThrowsNamingFileAndOffset()
    {
        string source = Path.Combine(await runs.DbdirAsync("default"), PostgreyDatabase.TripletsFileName);
        byte[] whole = await File.ReadAllBytesAsync(source, TestContext.Current.CancellationToken);
        int pageSize = BinaryPrimitives.ReadInt32LittleEndian(whole.AsSpan(20));
        long[] cuts = [0, 50, pageSize - 1, pageSize, pageSize + 100, whole.Length / 2, whole.Length - pageSize, whole.Length - 1];
        foreach (long cut in cuts)
        {
            string file = _dir.File($"cut{cut}.db");
            await File.WriteAllBytesAsync(file, whole.AsSpan(0, (int)cut).ToArray(), TestContext.Current.CancellationToken);
            var ex = Assert.Throws<BerkeleyDbFormatException>(() => BtreeFile.ReadAll(file));
            Assert.Equal(file, ex.FilePath);
            Assert.InRange(ex.Offset, 0, cut);
            Assert.StartsWith($"{file}: at offset {ex.Offset}: ", ex.Message);
        }
    }

    /// <summary>Damage to each structure the reader follows: the meta page, a page's own number,
    /// its item count, an item offset, the leaf chain, an overflow pointer.</summary>
    [Theory]
    [InlineData("magic")]
    [InlineData("pagesize")]
    [InlineData("root")]
    [InlineData("page number")]
    [InlineData("entries")]
    [InlineData("item offset")]
    [InlineData("leaf chain loop")]
    [InlineData("page type")]
    [InlineData("overflow pointer")]
    public async Task ReadAll_DamagedStructure_ThrowsAtTheDamagedPage(string what)
    {
        string source = what == "overflow pointer" ? OverflowFile() : Path.Combine(await runs.DbdirAsync("default"), PostgreyDatabase.TripletsFileName);
        byte[] bytes = await File.ReadAllBytesAsync(source, TestContext.Current.CancellationToken);
        int pageSize = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(20));
        int Page(int type) => Enumerable.Range(1, (bytes.Length / pageSize) - 1).First(p => bytes[(p * pageSize) + 25] == type);
        int leaf = Page(5);
        int at = leaf * pageSize;
        long expectedPage = leaf;
        switch (what)
        {
            case "magic": BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(12), 0x12345678); expectedPage = 0; break;
            case "pagesize": BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(20), 1000); expectedPage = 0; break;
            case "root": BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(88), 999_999); expectedPage = 0; break;
            case "page number": BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at + 8), 7777); break;
            case "entries": BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(at + 20), 4000); break;
            case "item offset": BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(at + 26), 0xFFF0); break;
            case "leaf chain loop":
                // The first leaf's successor points back to the first leaf.
                leaf = FirstLeaf(bytes, pageSize);
                int second = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan((leaf * pageSize) + 16));
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((second * pageSize) + 16), (uint)leaf);
                expectedPage = second;
                break;
            case "page type": bytes[at + 25] = 13; break;
            case "overflow pointer":
                int overflowed = FindOverflowItemPage(bytes, pageSize, out int itemOffset);
                BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan((overflowed * pageSize) + itemOffset + 4), (uint)leaf); // a leaf, not an overflow page
                expectedPage = leaf;
                break;
        }
        string file = _dir.File("damaged.db");
        await File.WriteAllBytesAsync(file, bytes, TestContext.Current.CancellationToken);
        var ex = Assert.Throws<BerkeleyDbFormatException>(() => BtreeFile.ReadAll(file));
        Assert.Equal(file, ex.FilePath);
        Assert.True(ex.Offset / pageSize == expectedPage || (expectedPage == 0 && ex.Offset < 100), $"{what}: {ex.Message}");
    }

    /// <summary>Random damage anywhere: the reader returns pairs or throws its own exception,
    /// never an IndexOutOfRange, OutOfMemory or endless loop.</summary>
    [Fact]
    public async Task ReadAll_RandomDamage_NeverAnyOtherException()
    {
        string source = Path.Combine(await runs.DbdirAsync("default"), PostgreyDatabase.TripletsFileName);
        byte[] whole = await File.ReadAllBytesAsync(source, TestContext.Current.CancellationToken);
        var random = new Random(14);
        string file = _dir.File("random.db");
        int rejected = 0;
        for (int round = 0; round < 300; round++)
        {
            byte[] bytes = (byte[])whole.Clone();
            int page = random.Next(whole.Length / 4096);
            for (int i = 0; i < 1 + random.Next(8); i++)
            {
                // Mostly the headers and item offsets, where damage changes the structure.
                int offset = (page * 4096) + (random.Next(3) == 0 ? random.Next(4096) : random.Next(64));
                bytes[offset] = (byte)random.Next(256);
            }
            await File.WriteAllBytesAsync(file, bytes, TestContext.Current.CancellationToken);
            try
            {
                BtreeFile.ReadAll(file);
            }
            catch (BerkeleyDbFormatException ex)
            {
                Assert.Equal(file, ex.FilePath);
                rejected++;
            }
        }
        Assert.True(rejected > 50, $"only {rejected} of 300 damaged copies were rejected");
    }

    private static int FirstLeaf(byte[] bytes, int pageSize)
    {
        int page = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(88));
        while (bytes[(page * pageSize) + 25] == 3)
        {
            int item = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan((page * pageSize) + 26));
            page = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan((page * pageSize) + item + 4));
        }
        return page;
    }

    /// <summary>A leaf page with an overflow item (type 3), and that item's offset in its page.</summary>
    private static int FindOverflowItemPage(byte[] bytes, int pageSize, out int itemOffset)
    {
        for (int page = 1; page < bytes.Length / pageSize; page++)
        {
            int at = page * pageSize;
            if (bytes[at + 25] != 5)
            {
                continue;
            }
            int entries = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at + 20));
            for (int i = 0; i < entries; i++)
            {
                int item = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(at + 26 + (2 * i)));
                if (bytes[at + item + 2] == 3)
                {
                    itemOffset = item;
                    return page;
                }
            }
        }
        throw new InvalidOperationException("no overflow item in the file");
    }
}
