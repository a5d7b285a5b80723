using System.Text;
using Npgsql;

namespace Postgrey.Storage.PostgreSql;

/// <summary>
/// Reads <c>--db</c> as psql and libpq do (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING):
/// a URI <c>postgresql://[USER[:PASSWORD]@][HOST][:PORT][/DBNAME][?param=value&amp;...]</c>, or
/// libpq's <c>key=value key='quoted value'</c> form, and turns it into Npgsql's connection
/// string. Only the parameters that mean something here are accepted; an unknown one is an
/// error that names it, rather than a setting silently ignored. Passwords need not be on the
/// command line: Npgsql reads <c>PGPASSWORD</c>, <c>PGPASSFILE</c> and <c>~/.pgpass</c> as libpq does,
/// and <c>--db-password-file</c> names a file of ours.
/// </summary>
public static class PostgreSqlConnectionString
{
    /// <summary>libpq parameter names and what they set on Npgsql's builder.</summary>
    private static readonly Dictionary<string, Action<NpgsqlConnectionStringBuilder, string>> Parameters = new(StringComparer.Ordinal)
    {
        ["host"] = (b, v) => b.Host = v,
        ["hostaddr"] = (b, v) => b.Host = v,
        ["port"] = (b, v) => b.Port = Port(v),
        ["dbname"] = (b, v) => b.Database = v,
        ["user"] = (b, v) => b.Username = v,
        ["password"] = (b, v) => b.Password = v,
        ["passfile"] = (b, v) => b.Passfile = v,
        ["connect_timeout"] = (b, v) => b.Timeout = Seconds(v, "connect_timeout"),
        ["application_name"] = (b, v) => b.ApplicationName = v,
        ["sslmode"] = (b, v) => b.SslMode = SslMode(v),
        ["sslrootcert"] = (b, v) => b.RootCertificate = v,
        ["sslcert"] = (b, v) => b.SslCertificate = v,
        ["sslkey"] = (b, v) => b.SslKey = v,
        ["target_session_attrs"] = (b, v) => b.TargetSessionAttributes = v,
    };

    public static bool IsUri(string text) =>
        text.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Parses <paramref name="text"/>; null and <paramref name="error"/> set when it is not a
    /// connection string we can use. The result has no password unless the text held one.
    /// </summary>
    public static NpgsqlConnectionStringBuilder? Parse(string text, out string error)
    {
        ArgumentNullException.ThrowIfNull(text);
        error = "";
        var builder = new NpgsqlConnectionStringBuilder();
        try
        {
            if (IsUri(text))
            {
                ParseUri(text, builder);
            }
            else if (text.Contains('='))
            {
                ParseKeywords(text, builder);
            }
            else
            {
                throw new FormatException("expected postgresql://USER@HOST:PORT/DBNAME or host=... dbname=... user=...");
            }
            if (string.IsNullOrEmpty(builder.Database))
            {
                throw new FormatException("no database name (postgresql://USER@HOST/DBNAME, or dbname=...)");
            }
            if (string.IsNullOrEmpty(builder.Host))
            {
                // libpq's default: the local Unix socket directory (Debian's).
                builder.Host = "/var/run/postgresql";
            }
            return builder;
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException)
        {
            error = ex.Message;
            return null;
        }
    }

    /// <summary>The connection string for logs and messages: the password replaced.</summary>
    public static string Describe(NpgsqlConnectionStringBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        string user = string.IsNullOrEmpty(builder.Username) ? "" : builder.Username + "@";
        string host = builder.Host ?? "";
        string hostPart = host.StartsWith('/') ? Uri.EscapeDataString(host) : host.Contains(':') ? "[" + host + "]" : host;
        return $"postgresql://{user}{hostPart}:{builder.Port}/{builder.Database}";
    }

    private static void ParseUri(string text, NpgsqlConnectionStringBuilder builder)
    {
        string rest = text[(text.IndexOf("://", StringComparison.Ordinal) + 3)..];
        string? query = null;
        int q = rest.IndexOf('?', StringComparison.Ordinal);
        if (q >= 0)
        {
            query = rest[(q + 1)..];
            rest = rest[..q];
        }
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        string authority = slash >= 0 ? rest[..slash] : rest;
        if (slash >= 0 && slash + 1 < rest.Length)
        {
            builder.Database = Decode(rest[(slash + 1)..]);
        }
        int at = authority.LastIndexOf('@');
        if (at >= 0)
        {
            string userInfo = authority[..at];
            authority = authority[(at + 1)..];
            int colon = userInfo.IndexOf(':', StringComparison.Ordinal);
            builder.Username = Decode(colon >= 0 ? userInfo[..colon] : userInfo);
            if (colon >= 0)
            {
                builder.Password = Decode(userInfo[(colon + 1)..]);
            }
        }
        if (authority.Length > 0)
        {
            // One host, or several separated by commas (libpq tries them in turn; so does Npgsql).
            var hosts = new List<string>();
            int? port = null;
            foreach (string one in authority.Split(','))
            {
                (string host, int? p) = HostPort(one);
                hosts.Add(host);
                port ??= p;
            }
            builder.Host = string.Join(',', hosts);
            if (port is { } value)
            {
                builder.Port = value;
            }
        }
        if (query is not null)
        {
            foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                int eq = pair.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                {
                    throw new FormatException($"'{pair}' in the URI query is not name=value");
                }
                Set(builder, Decode(pair[..eq]), Decode(pair[(eq + 1)..]));
            }
        }
    }

    private static (string Host, int? Port) HostPort(string text)
    {
        if (text.StartsWith('['))
        {
            int close = text.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                throw new FormatException($"'{text}': unclosed [ in an IPv6 address");
            }
            string host = text[1..close];
            string after = text[(close + 1)..];
            return (host, after.StartsWith(':') ? Port(after[1..]) : null);
        }
        int colon = text.LastIndexOf(':');
        return colon >= 0 ? (Decode(text[..colon]), Port(text[(colon + 1)..])) : (Decode(text), null);
    }

    /// <summary>libpq's <c>key=value</c> list: spaces between pairs, single quotes and backslash escapes in values.</summary>
    private static void ParseKeywords(string text, NpgsqlConnectionStringBuilder builder)
    {
        int i = 0;
        while (true)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i]))
            {
                i++;
            }
            if (i >= text.Length)
            {
                return;
            }
            int eq = text.IndexOf('=', i);
            if (eq < 0)
            {
                throw new FormatException($"'{text[i..]}' is not key=value");
            }
            string key = text[i..eq].Trim();
            i = eq + 1;
            while (i < text.Length && char.IsWhiteSpace(text[i]))
            {
                i++;
            }
            var value = new StringBuilder();
            if (i < text.Length && text[i] == '\'')
            {
                i++;
                while (true)
                {
                    if (i >= text.Length)
                    {
                        throw new FormatException($"unterminated quoted value of '{key}'");
                    }
                    char c = text[i++];
                    if (c == '\'')
                    {
                        break;
                    }
                    if (c == '\\' && i < text.Length)
                    {
                        c = text[i++];
                    }
                    value.Append(c);
                }
            }
            else
            {
                while (i < text.Length && !char.IsWhiteSpace(text[i]))
                {
                    char c = text[i++];
                    if (c == '\\' && i < text.Length)
                    {
                        c = text[i++];
                    }
                    value.Append(c);
                }
            }
            Set(builder, key, value.ToString());
        }
    }

    private static void Set(NpgsqlConnectionStringBuilder builder, string key, string value)
    {
        if (!Parameters.TryGetValue(key, out var set))
        {
            throw new FormatException($"unknown parameter '{key}' (known: {string.Join(", ", Parameters.Keys)})");
        }
        set(builder, value);
    }

    private static string Decode(string text) => Uri.UnescapeDataString(text);

    private static int Port(string text) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int port) && port is > 0 and < 65536
            ? port
            : throw new FormatException($"'{text}' is not a port number");

    private static int Seconds(string text, string name) =>
        int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int seconds) && seconds < 1024
            ? seconds
            : throw new FormatException($"{name}={text}: a number of seconds is expected");

    private static SslMode SslMode(string text) => text switch
    {
        "disable" => Npgsql.SslMode.Disable,
        "allow" => Npgsql.SslMode.Allow,
        "prefer" => Npgsql.SslMode.Prefer,
        "require" => Npgsql.SslMode.Require,
        "verify-ca" => Npgsql.SslMode.VerifyCA,
        "verify-full" => Npgsql.SslMode.VerifyFull,
        _ => throw new FormatException($"sslmode={text}: one of disable, allow, prefer, require, verify-ca, verify-full is expected"),
    };
}
