using System.CommandLine;
using System.CommandLine.Parsing;
using Npgsql;
using Postgrey.Configuration;
using Postgrey.Storage.PostgreSql;

namespace Postgrey.Tools;

/// <summary>
/// The tools' PostgreSQL flags, read as the service reads its own: <c>--db=URI</c> (or a libpq
/// key=value list) and <c>--db-password-file=PATH</c>; else the password comes from PGPASSWORD,
/// PGPASSFILE or ~/.pgpass, never from the command line.
/// </summary>
internal static class DatabaseFlags
{
    public const string PasswordFileName = "--db-password-file";

    /// <summary>A PostgreSQL URI option. Its errors do not repeat the value, which may hold a password.</summary>
    public static Option<NpgsqlConnectionStringBuilder?> Uri(string name, string description) => new(name)
    {
        Description = description,
        HelpName = "URI",
        CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
            NpgsqlConnectionStringBuilder? builder = PostgreSqlConnectionString.Parse(text, out string error);
            if (builder is null)
            {
                result.AddError($"{name}: {error}");
            }
            return builder;
        },
    };

    /// <summary>A string option that must not be empty (<c>--owner=</c>).</summary>
    public static Option<string?> NonEmpty(string name, string helpName, string description) => new(name)
    {
        Description = description,
        HelpName = helpName,
        CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
            if (text.Length == 0)
            {
                result.AddError($"{name} needs a value");
            }
            return text;
        },
    };

    public static Option<DbPassword?> PasswordFile() => new(PasswordFileName)
    {
        Description = "file holding the PostgreSQL password, first line (else PGPASSWORD, PGPASSFILE or ~/.pgpass)",
        HelpName = "PATH",
        CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
            if (DbPassword.TryRead(text, out DbPassword password, out string error))
            {
                return password;
            }
            result.AddError($"{PasswordFileName}={text}: {error}");
            return null;
        },
    };

    /// <summary>The connection string (password from the file if one was named) and the database
    /// as messages name it, without the password.</summary>
    public static (string ConnectionString, string Description) Resolve(NpgsqlConnectionStringBuilder given, DbPassword? password)
    {
        var builder = new NpgsqlConnectionStringBuilder(given.ConnectionString);
        if (password is { } file)
        {
            builder.Password = file.Password;
        }
        return (builder.ConnectionString, PostgreSqlConnectionString.Describe(builder));
    }

    public static bool IsGiven(CommandResult result, Option option) => result.GetResult(option) is { Implicit: false };

    /// <summary>import and export: --dbdir or --db, not both; --db-password-file only with --db.</summary>
    public static void CheckDbOrDbdir(CommandResult result, Option dbdir, Option db, Option password)
    {
        if (IsGiven(result, dbdir) && IsGiven(result, db))
        {
            result.AddError("--dbdir and --db: give one of them");
        }
        else if (IsGiven(result, password) && !IsGiven(result, db))
        {
            result.AddError($"{PasswordFileName} needs --db=postgresql://...");
        }
    }
}
