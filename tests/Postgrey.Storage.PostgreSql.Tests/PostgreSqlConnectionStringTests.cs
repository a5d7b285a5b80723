using Npgsql;

namespace Postgrey.Storage.PostgreSql.Tests;

/// <summary>--db as psql and libpq read it: URIs and key=value lists.</summary>
public sealed class PostgreSqlConnectionStringTests
{
    private static NpgsqlConnectionStringBuilder Ok(string text) =>
        PostgreSqlConnectionString.Parse(text, out string error) ?? throw new InvalidOperationException(error);

    [Fact]
    public void Parse_Uri_TakesUserHostPortDatabase()
    {
        var b = Ok("postgresql://postgrey@db.example.org:5433/greylist");
        Assert.Equal(("postgrey", "db.example.org", 5433, "greylist"), (b.Username, b.Host, b.Port, b.Database));
        Assert.Null(b.Password);
    }

    [Fact]
    public void Parse_UriWithoutPort_DefaultsTo5432()
    {
        var b = Ok("postgres://u@h/d");
        Assert.Equal(5432, b.Port);
    }

    [Fact]
    public void Parse_UriWithPercentEncodedSocketDirectory_IsAUnixSocket()
    {
        var b = Ok("postgresql://u@%2Fvar%2Frun%2Fpostgresql/greylist");
        Assert.Equal("/var/run/postgresql", b.Host);
    }

    [Fact]
    public void Parse_UriWithQueryParameters_AreApplied()
    {
        var b = Ok("postgresql://u@h/d?sslmode=require&application_name=mx1&connect_timeout=4&passfile=%2Fetc%2Fpostgrey%2Fpgpass");
        Assert.Equal(SslMode.Require, b.SslMode);
        Assert.Equal("mx1", b.ApplicationName);
        Assert.Equal(4, b.Timeout);
        Assert.Equal("/etc/postgrey/pgpass", b.Passfile);
    }

    [Fact]
    public void Parse_UriWithIPv6AndSeveralHosts_KeepsThemAll()
    {
        Assert.Equal("::1", Ok("postgresql://u@[::1]:5433/d").Host);
        Assert.Equal("a,b", Ok("postgresql://u@a:5433,b:5433/d").Host);
    }

    [Fact]
    public void Parse_UriWithoutHost_UsesDebiansSocketDirectory()
    {
        Assert.Equal("/var/run/postgresql", Ok("postgresql:///greylist").Host);
    }

    [Fact]
    public void Parse_KeyValueList_AsLibpqWritesIt()
    {
        var b = Ok("host=db port=5433 dbname=greylist user=postgrey application_name='mx 1'");
        Assert.Equal(("postgrey", "db", 5433, "greylist", "mx 1"), (b.Username, b.Host, b.Port, b.Database, b.ApplicationName));
    }

    [Theory]
    [InlineData("postgresql://u@h/d?colour=blue", "unknown parameter 'colour'")]
    [InlineData("postgresql://u@h:99999/d", "'99999' is not a port number")]
    [InlineData("postgresql://u@h", "no database name")]
    [InlineData("mydb", "expected postgresql://")]
    [InlineData("host=h dbname='unterminated", "unterminated quoted value of 'dbname'")]
    [InlineData("postgresql://u@h/d?sslmode=always", "sslmode=always")]
    public void Parse_Invalid_SaysWhat(string text, string expected)
    {
        Assert.Null(PostgreSqlConnectionString.Parse(text, out string error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Describe_LeavesThePasswordOut()
    {
        var b = Ok("postgresql://u:hunter2@h:5433/d");
        Assert.Equal("hunter2", b.Password);
        Assert.Equal("postgresql://u@h:5433/d", PostgreSqlConnectionString.Describe(b));
    }
}
