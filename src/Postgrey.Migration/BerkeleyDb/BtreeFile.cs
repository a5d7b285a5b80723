using System.Buffers.Binary;

namespace Postgrey.Migration.BerkeleyDb;

/// <summary>
/// Reads every key/data pair of a BerkeleyDB B-tree file (DB_BTREE, as postgrey's
/// <c>postgrey.db</c> and <c>postgrey_clients.db</c>) straight from its pages, so that an import
/// needs neither libdb nor db_dump on the machine. The layout is that of BerkeleyDB's
/// <c>db_page.h</c> (meta page version 9: BerkeleyDB 4.2 to 5.3), in either byte order.
/// </summary>
/// <remarks>
/// The pairs are found by descending from the root along the leftmost child to the first leaf and
/// then following the leaves' next-page links, not by scanning every page of leaf type: pages on
/// the free list, or left over from a split, keep their old type and contents on disk, and a scan
/// would bring back pairs that the tree no longer holds. The walk also yields the pairs in key
/// order, as db_dump does. Every offset is checked against the page and the file; anything wrong
/// is a <see cref="BerkeleyDbFormatException"/> with the file and byte offset.
/// </remarks>
public sealed class BtreeFile
{
    private const uint BtreeMagic = 0x053162;
    private const uint HashMagic = 0x061561;
    private const int PageHeaderSize = 26; // lsn 8, pgno 4, prev 4, next 4, entries 2, hf_offset 2, level 1, type 1

    // Page types (db_page.h).
    private const byte PageInternal = 3;   // P_IBTREE
    private const byte PageLeaf = 5;       // P_LBTREE
    private const byte PageOverflow = 7;   // P_OVERFLOW
    private const byte PageBtreeMeta = 9;  // P_BTREEMETA

    // Item types on a leaf (db_page.h B_*); the high bit marks a deleted item.
    private const byte ItemKeyData = 1;
    private const byte ItemDuplicate = 2;
    private const byte ItemOverflow = 3;
    private const byte ItemDeleted = 0x80;

    // Meta flags that change the layout this reader knows.
    private const byte MetaChecksum = 0x01;   // metaflags DBMETA_CHKSUM
    private const uint BtreeRecno = 0x02;     // BTM_RECNO
    private const uint BtreeSubDb = 0x20;     // BTM_SUBDB
    private const uint BtreeCompress = 0x80;  // BTM_COMPRESS

    private readonly string _path;
    private readonly SafeFileHandleReader _file;
    private readonly bool _bigEndian;
    private readonly int _pageSize;
    private readonly long _pageCount;
    private readonly uint _root;

    private BtreeFile(string path, SafeFileHandleReader file, bool bigEndian, int pageSize, long pageCount, uint root)
    {
        _path = path;
        _file = file;
        _bigEndian = bigEndian;
        _pageSize = pageSize;
        _pageCount = pageCount;
        _root = root;
    }

    public int PageSize => _pageSize;

    public bool BigEndian => _bigEndian;

    /// <summary>Every live key/data pair of the file at <paramref name="path"/>, in key order.</summary>
    public static IReadOnlyList<KeyValuePair<byte[], byte[]>> ReadAll(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var file = new SafeFileHandleReader(path);
        BtreeFile tree = Open(path, file);
        return tree.ReadPairs();
    }

    private static BtreeFile Open(string path, SafeFileHandleReader file)
    {
        long length = file.Length;
        const int MetaSize = 92; // DBMETA 72 bytes, then unused, minkey, re_len, re_pad, root
        if (length < MetaSize)
        {
            throw new BerkeleyDbFormatException(path, length, $"file of {length} bytes is too short for a BerkeleyDB meta page");
        }
        byte[] meta = new byte[MetaSize];
        file.Read(0, meta);
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(meta.AsSpan(12));
        bool bigEndian;
        if (magic == BtreeMagic)
        {
            bigEndian = false;
        }
        else if (BinaryPrimitives.ReverseEndianness(magic) == BtreeMagic)
        {
            bigEndian = true;
        }
        else if (magic == HashMagic || BinaryPrimitives.ReverseEndianness(magic) == HashMagic)
        {
            throw new BerkeleyDbFormatException(path, 12, "a BerkeleyDB hash database, not a B-tree (postgrey writes B-trees)");
        }
        else
        {
            throw new BerkeleyDbFormatException(path, 12, $"not a BerkeleyDB B-tree file (magic 0x{magic:x8})");
        }
        uint U32(int offset) => bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(meta.AsSpan(offset)) : BinaryPrimitives.ReadUInt32LittleEndian(meta.AsSpan(offset));

        uint version = U32(16);
        if (version is not (8 or 9))
        {
            throw new BerkeleyDbFormatException(path, 16, $"B-tree version {version} is not supported (8 or 9: BerkeleyDB 4.0 to 5.3)");
        }
        uint pageSize = U32(20);
        if (pageSize is < 512 or > 65536 || (pageSize & (pageSize - 1)) != 0)
        {
            throw new BerkeleyDbFormatException(path, 20, $"page size {pageSize} is not a power of two from 512 to 65536");
        }
        if (meta[24] != 0)
        {
            throw new BerkeleyDbFormatException(path, 24, "the database is encrypted");
        }
        if (meta[25] != PageBtreeMeta)
        {
            throw new BerkeleyDbFormatException(path, 25, $"page 0 has type {meta[25]}, not a B-tree meta page ({PageBtreeMeta})");
        }
        if ((meta[26] & MetaChecksum) != 0)
        {
            throw new BerkeleyDbFormatException(path, 26, "the database has page checksums, which postgrey never turns on; not supported");
        }
        uint flags = U32(48);
        if ((flags & (BtreeRecno | BtreeSubDb | BtreeCompress)) != 0)
        {
            throw new BerkeleyDbFormatException(path, 48, $"B-tree flags 0x{flags:x} (recno, sub-databases or compression) are not supported");
        }
        if (length % pageSize != 0)
        {
            throw new BerkeleyDbFormatException(path, length - (length % pageSize), $"the file ends {length % pageSize} bytes into page {length / pageSize} ({length} bytes, pages of {pageSize}): truncated");
        }
        uint root = U32(88);
        long pageCount = length / pageSize;
        uint lastPage = U32(32);
        if (lastPage >= pageCount)
        {
            throw new BerkeleyDbFormatException(path, length, $"the meta page says the last page is {lastPage}, but the file ends after {pageCount} pages: truncated");
        }
        if (root == 0 || root >= pageCount)
        {
            throw new BerkeleyDbFormatException(path, 88, $"root page {root} is outside the file's {pageCount} pages");
        }
        return new BtreeFile(path, file, bigEndian, (int)pageSize, pageCount, root);
    }

    private List<KeyValuePair<byte[], byte[]>> ReadPairs()
    {
        var pairs = new List<KeyValuePair<byte[], byte[]>>();
        byte[] page = new byte[_pageSize];
        uint pgno = FirstLeaf(page);
        var seen = new HashSet<uint>();
        uint previous = 0;
        while (pgno != 0)
        {
            if (pgno >= _pageCount)
            {
                throw Bad(previous, 16, $"leaf page {previous} links to page {pgno}, outside the file's {_pageCount} pages");
            }
            if (!seen.Add(pgno))
            {
                throw Bad(previous, 16, $"the next-page link of leaf page {previous} loops back to page {pgno}");
            }
            ReadPage(pgno, page, PageLeaf);
            if (PrevPgno(page) != previous)
            {
                throw Bad(pgno, 12, $"leaf page {pgno} names page {PrevPgno(page)} as its previous, not {previous}");
            }
            ReadLeaf(pgno, page, pairs);
            previous = pgno;
            pgno = NextPgno(page);
        }
        return pairs;
    }

    /// <summary>Descends from the root along the first child of each internal page.</summary>
    private uint FirstLeaf(byte[] page)
    {
        uint pgno = _root;
        int level = -1;
        for (int depth = 0; depth < 64; depth++)
        {
            ReadPage(pgno, page, expectedType: 0);
            byte type = page[25];
            int pageLevel = page[24];
            if (level >= 0 && pageLevel != level - 1)
            {
                throw Bad(pgno, 24, $"page {pgno} has level {pageLevel} below a page of level {level}");
            }
            level = pageLevel;
            if (type == PageLeaf)
            {
                return pgno;
            }
            if (type != PageInternal)
            {
                throw Bad(pgno, 25, $"page {pgno} has type {type}, expected a B-tree internal ({PageInternal}) or leaf ({PageLeaf}) page");
            }
            int entries = Entries(page);
            if (entries == 0)
            {
                throw Bad(pgno, 20, $"internal page {pgno} has no entries");
            }
            // BINTERNAL: len 2, type 1, unused 1, pgno 4, nrecs 4, data.
            int item = ItemOffset(pgno, page, 0, entries);
            CheckItem(pgno, item, 12);
            int dataLength = U16(page, item);
            CheckItem(pgno, item, 12 + dataLength);
            uint child = U32(page, item + 4);
            if (child == 0 || child >= _pageCount)
            {
                throw Bad(pgno, item + 4, $"internal page {pgno} points to page {child}, outside the file's {_pageCount} pages");
            }
            pgno = child;
        }
        throw Bad(pgno, 24, "the tree is more than 64 levels deep");
    }

    private void ReadLeaf(uint pgno, byte[] page, List<KeyValuePair<byte[], byte[]>> pairs)
    {
        if (page[24] != 1)
        {
            throw Bad(pgno, 24, $"leaf page {pgno} has level {page[24]}, not 1");
        }
        int entries = Entries(page);
        if (entries % 2 != 0)
        {
            throw Bad(pgno, 20, $"leaf page {pgno} has an odd number of items ({entries}): every key needs its data");
        }
        for (int i = 0; i < entries; i += 2)
        {
            byte[]? key = ReadItem(pgno, page, i, entries);
            byte[]? data = ReadItem(pgno, page, i + 1, entries);
            if (key is not null && data is not null)
            {
                pairs.Add(new(key, data));
            }
        }
    }

    /// <summary>A leaf item's bytes, or null when it is marked deleted.</summary>
    private byte[]? ReadItem(uint pgno, byte[] page, int index, int entries)
    {
        int item = ItemOffset(pgno, page, index, entries);
        CheckItem(pgno, item, 3);
        byte type = page[item + 2];
        if ((type & ItemDeleted) != 0)
        {
            return null;
        }
        switch (type)
        {
            case ItemKeyData:
            {
                // BKEYDATA: len 2, type 1, data.
                int length = U16(page, item);
                CheckItem(pgno, item, 3 + length);
                return page.AsSpan(item + 3, length).ToArray();
            }
            case ItemOverflow:
            {
                // BOVERFLOW: unused 2, type 1, unused 1, pgno 4, tlen 4.
                CheckItem(pgno, item, 12);
                return ReadOverflow(pgno, item, U32(page, item + 4), U32(page, item + 8));
            }
            case ItemDuplicate:
                throw Bad(pgno, item + 2, $"item {index} of page {pgno} is an off-page duplicate set, which postgrey never writes");
            default:
                throw Bad(pgno, item + 2, $"item {index} of page {pgno} has unknown type {type}");
        }
    }

    private byte[] ReadOverflow(uint fromPage, int fromItem, uint pgno, uint totalLength)
    {
        if (totalLength > (ulong)_pageCount * (ulong)_pageSize)
        {
            throw Bad(fromPage, fromItem + 8, $"overflow item of {totalLength} bytes is longer than the file");
        }
        byte[] result = new byte[totalLength];
        byte[] page = new byte[_pageSize];
        int filled = 0;
        var seen = new HashSet<uint>();
        uint referrer = fromPage;
        int referrerOffset = fromItem + 4;
        while (filled < result.Length)
        {
            if (pgno == 0 || pgno >= _pageCount)
            {
                throw Bad(referrer, referrerOffset, $"overflow chain ends at page {pgno} after {filled} of {totalLength} bytes");
            }
            if (!seen.Add(pgno))
            {
                throw Bad(referrer, referrerOffset, $"overflow chain loops back to page {pgno}");
            }
            ReadPage(pgno, page, PageOverflow);
            int length = U16(page, 22); // OV_LEN: the bytes this page holds
            if (length > _pageSize - PageHeaderSize || length > result.Length - filled)
            {
                throw Bad(pgno, 22, $"overflow page {pgno} claims {length} bytes; {Math.Min(_pageSize - PageHeaderSize, result.Length - filled)} fit");
            }
            page.AsSpan(PageHeaderSize, length).CopyTo(result.AsSpan(filled));
            filled += length;
            if (length == 0 && filled < result.Length)
            {
                throw Bad(pgno, 22, $"overflow page {pgno} is empty before the item's end");
            }
            referrer = pgno;
            referrerOffset = 16;
            pgno = NextPgno(page);
        }
        return result;
    }

    private void ReadPage(uint pgno, byte[] page, byte expectedType)
    {
        if (pgno >= _pageCount)
        {
            throw new BerkeleyDbFormatException(_path, (long)pgno * _pageSize, $"page {pgno} is beyond the end of the file ({_pageCount} pages)");
        }
        _file.Read((long)pgno * _pageSize, page);
        uint stored = U32(page, 8);
        if (stored != pgno)
        {
            throw Bad(pgno, 8, $"page {pgno} says it is page {stored}");
        }
        if (expectedType != 0 && page[25] != expectedType)
        {
            throw Bad(pgno, 25, $"page {pgno} has type {page[25]}, expected {expectedType}");
        }
        int entries = Entries(page);
        int hfOffset = U16(page, 22);
        if (page[25] != PageOverflow && (hfOffset < PageHeaderSize + (2 * entries) || hfOffset > _pageSize))
        {
            throw Bad(pgno, 22, $"page {pgno}: {entries} items and free space from offset {hfOffset} do not fit a {_pageSize}-byte page");
        }
    }

    /// <summary>The offset of item <paramref name="index"/>, checked to lie in the page's item area.</summary>
    private int ItemOffset(uint pgno, byte[] page, int index, int entries)
    {
        int slot = PageHeaderSize + (2 * index);
        int offset = U16(page, slot);
        if (offset < PageHeaderSize + (2 * entries) || offset >= _pageSize)
        {
            throw Bad(pgno, slot, $"item {index} of page {pgno} is at offset {offset}, outside the page's item area");
        }
        return offset;
    }

    private void CheckItem(uint pgno, int item, int length)
    {
        if (item + length > _pageSize)
        {
            throw Bad(pgno, item, $"an item of {length} bytes at offset {item} runs past the end of page {pgno}");
        }
    }

    private int Entries(byte[] page) => U16(page, 20);

    private uint PrevPgno(byte[] page) => U32(page, 12);

    private uint NextPgno(byte[] page) => U32(page, 16);

    private int U16(byte[] page, int offset) =>
        _bigEndian ? BinaryPrimitives.ReadUInt16BigEndian(page.AsSpan(offset)) : BinaryPrimitives.ReadUInt16LittleEndian(page.AsSpan(offset));

    private uint U32(byte[] page, int offset) =>
        _bigEndian ? BinaryPrimitives.ReadUInt32BigEndian(page.AsSpan(offset)) : BinaryPrimitives.ReadUInt32LittleEndian(page.AsSpan(offset));

    private BerkeleyDbFormatException Bad(uint pgno, int offsetInPage, string message) =>
        new(_path, ((long)pgno * _pageSize) + offsetInPage, message);

    /// <summary>Positional reads of whole buffers; a short read is a truncated file.</summary>
    private sealed class SafeFileHandleReader : IDisposable
    {
        private readonly Microsoft.Win32.SafeHandles.SafeFileHandle _handle;
        private readonly string _path;

        public SafeFileHandleReader(string path)
        {
            _path = path;
            _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            Length = RandomAccess.GetLength(_handle);
        }

        public long Length { get; }

        public void Read(long offset, byte[] buffer)
        {
            int read = 0;
            while (read < buffer.Length)
            {
                int n = RandomAccess.Read(_handle, buffer.AsSpan(read), offset + read);
                if (n == 0)
                {
                    throw new BerkeleyDbFormatException(_path, offset + read, "unexpected end of file");
                }
                read += n;
            }
        }

        public void Dispose() => _handle.Dispose();
    }
}

/// <summary>A BerkeleyDB file that cannot be read: what is wrong, in which file, at which byte.</summary>
public sealed class BerkeleyDbFormatException(string path, long offset, string problem)
    : Exception($"{path}: at offset {offset}: {problem}")
{
    public string FilePath { get; } = path;

    public long Offset { get; } = offset;

    public string Problem { get; } = problem;
}
