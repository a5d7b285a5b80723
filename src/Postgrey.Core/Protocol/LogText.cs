using System.Text;

namespace Postgrey.Core.Protocol;

/// <summary>Makes client-supplied text safe for a log line: control characters are written as \xNN,
/// so a client cannot forge or break log lines.</summary>
public static class LogText
{
    public static string Escape(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int i = 0;
        while (i < text.Length && !char.IsControl(text[i]))
        {
            i++;
        }
        if (i == text.Length)
        {
            return text;
        }
        var sb = new StringBuilder(text.Length + 8);
        sb.Append(text, 0, i);
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsControl(c))
            {
                sb.Append("\\x").Append(((int)c).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }
}
