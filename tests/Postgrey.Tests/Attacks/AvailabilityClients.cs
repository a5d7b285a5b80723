using System.Net;
using System.Net.Sockets;
using System.Text;
using Postgrey.Testing;

namespace Postgrey.Tests.Attacks;

/// <summary>Raw socket reads for clients that half-close or trickle.</summary>
internal static class AvailabilitySockets
{
    /// <summary>Everything the server sends until it closes; fails when it does not close
    /// within <paramref name="timeout"/>.</summary>
    public static async Task<string> ReadToEndAsync(Socket socket, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var received = new MemoryStream();
        byte[] buffer = new byte[4096];
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    return Encoding.UTF8.GetString(received.ToArray());
                }
                received.Write(buffer, 0, n);
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the server did not close the connection within {timeout}; received <{Encoding.UTF8.GetString(received.ToArray())}>");
        }
    }

    /// <summary>True when the server closed (or reset) the connection within <paramref name="wait"/>.</summary>
    public static async Task<bool> IsClosedAsync(Socket socket, TimeSpan wait)
    {
        using var cts = new CancellationTokenSource(wait);
        byte[] buffer = new byte[256];
        try
        {
            while (true)
            {
                if (await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token) == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }
}

/// <summary>A client that asks as fast as it is answered, new triplets each time, until stopped.</summary>
internal static class AvailabilityLoad
{
    public static async Task RunAsync(EndPoint endPoint, int id, CancellationToken stop)
    {
        await using var client = await PolicyClient.ConnectAsync(endPoint, CancellationToken.None);
        for (int i = 0; !stop.IsCancellationRequested; i++)
        {
            string? action = await client.AskAsync(Requests.Policy(sender: $"load{id}@example.net", recipient: $"r{i}@example.org"), CancellationToken.None);
            if (action is null)
            {
                throw new InvalidOperationException($"load client {id}: connection closed");
            }
        }
    }
}

/// <summary>A client that asks every 20 ms and fails when an answer takes longer than its bound.</summary>
internal sealed class AvailabilityProbe(EndPoint endPoint, TimeSpan bound)
{
    public int Answered { get; private set; }

    public async Task RunAsync(CancellationToken stop)
    {
        await using var client = await PolicyClient.ConnectAsync(endPoint, CancellationToken.None);
        while (!stop.IsCancellationRequested)
        {
            await client.SendAsync(Requests.Policy(sender: "probe@example.net", recipient: "probe@example.org"), CancellationToken.None);
            string? action;
            try
            {
                action = await client.ReadActionAsync(bound, CancellationToken.None);
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"probe: no answer within {bound} after {Answered} answers");
            }
            if (action is null)
            {
                throw new InvalidOperationException("probe: connection closed");
            }
            Answered++;
            try
            {
                await Task.Delay(20, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
