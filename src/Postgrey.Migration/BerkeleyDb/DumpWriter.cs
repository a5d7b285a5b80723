using System.Text;

namespace Postgrey.Migration.BerkeleyDb;

/// <summary>
/// Writes key/data pairs in the text format that BerkeleyDB's <c>db_load</c> reads and
/// <c>db_dump -p</c> writes: a header, then each key and each data item on a line of its own
/// after one space, printable ASCII as is, a backslash doubled, every other byte as <c>\xx</c>.
/// </summary>
public static class DumpWriter
{
    public static void Write(TextWriter output, IEnumerable<KeyValuePair<byte[], byte[]>> pairs)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(pairs);
        output.Write("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n");
        var line = new StringBuilder();
        foreach (var (key, data) in pairs)
        {
            WriteItem(output, line, key);
            WriteItem(output, line, data);
        }
        output.Write("DATA=END\n");
    }

    private static void WriteItem(TextWriter output, StringBuilder line, byte[] item)
    {
        line.Clear().Append(' ');
        foreach (byte b in item)
        {
            if (b == (byte)'\\')
            {
                line.Append(@"\\");
            }
            else if (b is >= 0x20 and < 0x7f)
            {
                line.Append((char)b);
            }
            else
            {
                line.Append('\\').Append(b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
            }
        }
        output.Write(line.Append('\n'));
    }
}
