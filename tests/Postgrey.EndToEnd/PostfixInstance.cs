using Postgrey.Testing;

namespace Postgrey.EndToEnd;

/// <summary>
/// A private Postfix instance: its own config, queue and data directories under a temp
/// directory, smtpd on a loopback port (not chrooted), loopback NOT in mynetworks so that the
/// policy check applies, mail for test.example delivered by virtual(8) to one mbox file. It
/// never touches the machine's own instance (postfix -c DIR acts on this one only).
/// </summary>
internal sealed class PostfixInstance : IAsyncDisposable
{
    private readonly TempDirectory _dir;

    private PostfixInstance(TempDirectory dir, int port)
    {
        _dir = dir;
        Port = port;
    }

    public int Port { get; }

    public string ConfigDirectory => _dir.File("conf");

    public string Mailbox => Path.Combine(_dir.File("mail"), "mbox");

    public string MailLog => _dir.File("maillog");

    public static async Task<PostfixInstance> StartAsync(string policyService)
    {
        Tools.Require();
        var dir = new TempDirectory();
        int port = PolicyServerProcess.FreePort();
        var instance = new PostfixInstance(dir, port);
        try
        {
            foreach (string sub in new[] { "conf", "queue", "data", "mail" })
            {
                Directory.CreateDirectory(dir.File(sub));
            }
            await Tools.CheckedAsync("chown", "nobody:nogroup", dir.File("mail"));
            await Tools.CheckedAsync("chown", "postfix", dir.File("data"));
            File.Copy("/usr/share/postfix/master.cf.dist", dir.File("conf/master.cf"));
            File.WriteAllText(dir.File("conf/main.cf"), $"""
                compatibility_level = 3.6
                queue_directory = {dir.File("queue")}
                data_directory = {dir.File("data")}
                mail_owner = postfix
                setgid_group = postdrop
                myhostname = mx.test.example
                mydomain = test.example
                myorigin = test.example
                mydestination =
                inet_interfaces = 127.0.0.1
                inet_protocols = ipv4
                # loopback is deliberately not here: the policy check must apply to the tests' client
                mynetworks = 192.0.2.1/32
                smtpd_peername_lookup = no
                alias_maps =
                alias_database =
                local_recipient_maps =
                virtual_mailbox_domains = test.example
                virtual_mailbox_base = {dir.File("mail")}
                virtual_mailbox_maps = static:mbox
                virtual_uid_maps = static:65534
                virtual_gid_maps = static:65534
                virtual_minimum_uid = 100
                smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service {policyService}
                maillog_file = {dir.File("maillog")}
                maillog_file_prefixes = {dir.Path}
                smtputf8_enable = no
                """);
            string conf = dir.File("conf");
            await Tools.CheckedAsync("postconf", "-c", conf, "-F", "*/*/chroot = n");
            await Tools.CheckedAsync("postconf", "-c", conf, "-MX", "smtp/inet");
            await Tools.CheckedAsync("postconf", "-c", conf, "-M", $"127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd");
            await Tools.CheckedAsync("postfix", "-c", conf, "start");
            return instance;
        }
        catch
        {
            await instance.DisposeAsync();
            throw;
        }
    }

    /// <summary>Sends one mail with swaks and returns Postfix's answer to RCPT TO.</summary>
    public async Task<string> SendAsync(string from, string to, string subject, string clientAddress = "127.0.0.1")
    {
        var (_, output) = await Tools.RunAsync("swaks",
            "--server", $"127.0.0.1:{Port}", "--local-interface", clientAddress,
            "--from", from, "--to", to, "--h-Subject", subject, "--timeout", "30");
        string[] lines = output.Split('\n');
        int rcpt = Array.FindIndex(lines, l => l.Contains("-> RCPT TO:", StringComparison.Ordinal));
        Assert.True(rcpt >= 0 && rcpt + 1 < lines.Length, "swaks did not get to RCPT TO:\n" + output);
        return lines[rcpt + 1].TrimStart('<', '*', '-', ' ').Trim();
    }

    /// <summary>Waits until a delivered message with this subject is in the mailbox, and returns it.</summary>
    public async Task<string> WaitForMessageAsync(string subject)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            if (File.Exists(Mailbox))
            {
                string[] messages = File.ReadAllText(Mailbox).Split("\nFrom ", StringSplitOptions.None);
                string? message = messages.FirstOrDefault(m => m.Contains($"\nSubject: {subject}\n", StringComparison.Ordinal));
                if (message is not null)
                {
                    return message;
                }
            }
            await Task.Delay(100);
        }
        throw new TimeoutException($"no message '{subject}' delivered; mail log:\n{(File.Exists(MailLog) ? File.ReadAllText(MailLog) : "")}");
    }

    public async ValueTask DisposeAsync()
    {
        await Tools.RunAsync("postfix", "-c", ConfigDirectory, "stop");
        _dir.Dispose();
    }
}
