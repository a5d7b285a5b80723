using System.Text;

namespace Postgrey.Testing;

/// <summary>Builds policy requests as Postfix sends them.</summary>
public static class Requests
{
    public static string Policy(
        string clientAddress = "192.0.2.7",
        string clientName = "mx.example.net",
        string sender = "a@example.net",
        string recipient = "b@example.org",
        string? instance = null,
        long? testTime = null,
        string? queueId = null,
        bool etrnDomain = true,
        IEnumerable<KeyValuePair<string, string>>? extra = null,
        string request = "smtpd_access_policy")
    {
        var sb = new StringBuilder();
        sb.Append("request=").Append(request).Append("\nprotocol_state=RCPT\nprotocol_name=ESMTP\n");
        sb.Append("client_address=").Append(clientAddress).Append('\n');
        sb.Append("client_name=").Append(clientName).Append('\n');
        sb.Append("reverse_client_name=").Append(clientName).Append('\n');
        sb.Append("helo_name=").Append(clientName).Append('\n');
        sb.Append("sender=").Append(sender).Append('\n');
        sb.Append("recipient=").Append(recipient).Append('\n');
        sb.Append("recipient_count=0\n");
        if (queueId is not null)
        {
            sb.Append("queue_id=").Append(queueId).Append('\n');
        }
        if (instance is not null)
        {
            sb.Append("instance=").Append(instance).Append('\n');
        }
        if (etrnDomain)
        {
            sb.Append("etrn_domain=\n");
        }
        if (testTime is not null)
        {
            sb.Append("policy_test_time=").Append(testTime.Value).Append('\n');
        }
        foreach (var pair in extra ?? [])
        {
            sb.Append(pair.Key).Append('=').Append(pair.Value).Append('\n');
        }
        return sb.Append('\n').ToString();
    }
}
