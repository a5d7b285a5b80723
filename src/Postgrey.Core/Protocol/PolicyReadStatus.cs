namespace Postgrey.Core.Protocol;

/// <summary>What <see cref="PolicyRequestParser.TryRead(ref System.Buffers.ReadOnlySequence{byte}, PolicyRequest)"/> found in the buffer.</summary>
public enum PolicyReadStatus
{
    /// <summary>No complete request yet; the incomplete line is left unconsumed.</summary>
    NeedMoreData,

    /// <summary>A complete request (ended by an empty line) is in the <see cref="PolicyRequest"/>.</summary>
    Request,

    /// <summary>A non-empty line without '=' was consumed; postgrey logs it and goes on.</summary>
    GarbageLine,

    /// <summary>A line exceeded <see cref="PolicyLimits.MaxLineBytes"/>: close the connection.</summary>
    LineTooLong,

    /// <summary>A request exceeded <see cref="PolicyLimits.MaxAttributesPerRequest"/>: close.</summary>
    TooManyAttributes,

    /// <summary>A request exceeded <see cref="PolicyLimits.MaxRequestBytes"/>: close.</summary>
    RequestTooLarge,
}
