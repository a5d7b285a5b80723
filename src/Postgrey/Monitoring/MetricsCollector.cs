using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;
using Postgrey.Core.Telemetry;

namespace Postgrey.Monitoring;

/// <summary>
/// Listens to the "Postgrey" meter and keeps, per instrument, one running value per label set
/// (a sum, a last value, or histogram buckets); <see cref="Write"/> renders them in Prometheus's
/// text format (0.0.4), followed by the process's own figures. A measurement is a lookup in a
/// short array of series and an interlocked add: no allocation, no lock (a lock only when a
/// label set is seen for the first time). Only started with --metrics.
/// </summary>
internal sealed class MetricsCollector : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly object _gate = new();
    private readonly List<Aggregate> _instruments = [];
    private readonly DateTimeOffset _started = Process.GetCurrentProcess().StartTime.ToUniversalTime();

    public MetricsCollector()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name != PostgreyMeter.Name)
            {
                return;
            }
            var aggregate = new Aggregate(instrument);
            lock (_gate)
            {
                _instruments.Add(aggregate);
            }
            listener.EnableMeasurementEvents(instrument, aggregate);
        };
        _listener.SetMeasurementEventCallback<long>(static (_, value, tags, state) => ((Aggregate)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<int>(static (_, value, tags, state) => ((Aggregate)state!).Record(value, tags));
        _listener.SetMeasurementEventCallback<double>(static (_, value, tags, state) => ((Aggregate)state!).Record(value, tags));
        _listener.Start();
    }

    /// <summary>The exposition: every instrument with its series, then the process.</summary>
    public void Write(StringBuilder output)
    {
        _listener.RecordObservableInstruments(); // gauges read now, on the scraper's thread
        Aggregate[] instruments;
        lock (_gate)
        {
            instruments = [.. _instruments];
        }
        foreach (Aggregate aggregate in instruments.OrderBy(a => a.Name, StringComparer.Ordinal))
        {
            aggregate.Write(output);
        }
        WriteProcess(output);
    }

    /// <summary>Memory, GC and CPU, as Prometheus's client libraries name them.</summary>
    private void WriteProcess(StringBuilder output)
    {
        using var process = Process.GetCurrentProcess();
        Sample(output, "process_cpu_seconds_total", "counter", "User and system CPU time", process.TotalProcessorTime.TotalSeconds);
        Sample(output, "process_resident_memory_bytes", "gauge", "Resident memory", process.WorkingSet64);
        Sample(output, "process_virtual_memory_bytes", "gauge", "Virtual memory", process.VirtualMemorySize64);
        Sample(output, "process_start_time_seconds", "gauge", "Start time, unix seconds", _started.ToUnixTimeMilliseconds() / 1000.0);
        if (OperatingSystem.IsLinux())
        {
            try
            {
                Sample(output, "process_open_fds", "gauge", "Open file descriptors", Directory.GetFileSystemEntries("/proc/self/fd").Length);
            }
            catch (IOException)
            {
                // /proc hidden: left out
            }
            catch (UnauthorizedAccessException)
            {
                // left out
            }
        }
        Sample(output, "process_threads", "gauge", "Threads", process.Threads.Count);
        GCMemoryInfo gc = GC.GetGCMemoryInfo();
        Sample(output, "dotnet_gc_heap_size_bytes", "gauge", "GC heap size after the last collection", gc.HeapSizeBytes);
        Sample(output, "dotnet_gc_committed_bytes", "gauge", "Memory committed by the GC", gc.TotalCommittedBytes);
        Sample(output, "dotnet_gc_allocated_bytes_total", "counter", "Bytes allocated on the GC heap", GC.GetTotalAllocatedBytes());
        Sample(output, "dotnet_gc_pause_seconds_total", "counter", "Time the GC paused the process", GC.GetTotalPauseDuration().TotalSeconds);
        output.Append("# HELP dotnet_gc_collections_total Garbage collections by generation\n# TYPE dotnet_gc_collections_total counter\n");
        for (int generation = 0; generation <= GC.MaxGeneration; generation++)
        {
            output.Append("dotnet_gc_collections_total{generation=\"gen").Append(generation).Append("\"} ")
                .Append(GC.CollectionCount(generation)).Append('\n');
        }
        Sample(output, "dotnet_thread_pool_threads", "gauge", "Thread-pool threads", ThreadPool.ThreadCount);
    }

    private static void Sample(StringBuilder output, string name, string type, string help, double value)
    {
        output.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        output.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
        output.Append(name).Append(' ').Append(Number(value)).Append('\n');
    }

    internal static string Number(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf" : double.IsNegativeInfinity(value) ? "-Inf" : double.IsNaN(value) ? "NaN"
        : value.ToString("R", CultureInfo.InvariantCulture);

    public void Dispose() => _listener.Dispose();

    private enum Kind { Counter, Gauge, Histogram }

    /// <summary>One instrument: its Prometheus name and type, and its series.</summary>
    private sealed class Aggregate
    {
        private readonly Kind _kind;
        private readonly bool _sums; // counters and up-down counters add; gauges set
        private readonly double[] _bounds;
        private readonly string _help;
        private Series[] _series = [];

        public Aggregate(Instrument instrument)
        {
            _kind = instrument switch
            {
                Histogram<double> or Histogram<long> or Histogram<int> => Kind.Histogram,
                Counter<long> or Counter<int> or Counter<double> or ObservableCounter<long> or ObservableCounter<double> => Kind.Counter,
                _ => Kind.Gauge,
            };
            _sums = instrument is Counter<long> or Counter<int> or Counter<double> or UpDownCounter<long> or UpDownCounter<int> or UpDownCounter<double>;
            _bounds = instrument switch
            {
                Histogram<double> h => h.Advice?.HistogramBucketBoundaries?.ToArray() ?? DefaultBounds,
                _ => [],
            };
            _help = instrument.Description ?? "";
            Name = PrometheusName(instrument.Name, instrument.Unit, _kind == Kind.Counter);
        }

        public string Name { get; }

        private static readonly double[] DefaultBounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

        /// <summary>OpenTelemetry's mapping: dots to underscores, the unit as a suffix (s: _seconds;
        /// counts in braces: none), _total on counters.</summary>
        internal static string PrometheusName(string name, string? unit, bool counter)
        {
            string result = name.Replace('.', '_');
            string suffix = unit switch
            {
                "s" => "_seconds",
                "By" => "_bytes",
                _ => "",
            };
            if (!result.EndsWith(suffix, StringComparison.Ordinal))
            {
                result += suffix;
            }
            return counter ? result + "_total" : result;
        }

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            Series series = Find(tags);
            if (_kind == Kind.Histogram)
            {
                int i = 0;
                while (i < _bounds.Length && value > _bounds[i])
                {
                    i++;
                }
                Interlocked.Increment(ref series.Buckets[i]);
                Interlocked.Increment(ref series.Count);
                Add(ref series.Value, value);
            }
            else if (_sums)
            {
                Add(ref series.Value, value);
            }
            else
            {
                Volatile.Write(ref series.Value, value);
            }
        }

        private static void Add(ref double target, double value)
        {
            double seen = Volatile.Read(ref target);
            while (true)
            {
                double was = Interlocked.CompareExchange(ref target, seen + value, seen);
                if (was.Equals(seen))
                {
                    return;
                }
                seen = was;
            }
        }

        private Series Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            Series[] all = Volatile.Read(ref _series);
            foreach (Series s in all)
            {
                if (s.Matches(tags))
                {
                    return s;
                }
            }
            lock (this)
            {
                foreach (Series s in _series)
                {
                    if (s.Matches(tags))
                    {
                        return s;
                    }
                }
                var created = new Series(tags, _kind == Kind.Histogram ? _bounds.Length + 1 : 0);
                Volatile.Write(ref _series, [.. _series, created]);
                return created;
            }
        }

        public void Write(StringBuilder output)
        {
            Series[] all = Volatile.Read(ref _series);
            if (all.Length == 0)
            {
                return;
            }
            output.Append("# HELP ").Append(Name).Append(' ').Append(_help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)).Append('\n');
            output.Append("# TYPE ").Append(Name).Append(' ').Append(_kind switch { Kind.Counter => "counter", Kind.Histogram => "histogram", _ => "gauge" }).Append('\n');
            foreach (Series s in all)
            {
                if (_kind != Kind.Histogram)
                {
                    output.Append(Name);
                    s.WriteLabels(output, null);
                    output.Append(' ').Append(Number(Volatile.Read(ref s.Value))).Append('\n');
                    continue;
                }
                // Read count first: the buckets, summed, are then never fewer than it says.
                long count = Interlocked.Read(ref s.Count);
                long cumulative = 0;
                for (int i = 0; i <= _bounds.Length; i++)
                {
                    cumulative += Interlocked.Read(ref s.Buckets[i]);
                    output.Append(Name).Append("_bucket");
                    s.WriteLabels(output, i < _bounds.Length ? Number(_bounds[i]) : "+Inf");
                    output.Append(' ').Append(i < _bounds.Length ? cumulative : Math.Max(cumulative, count)).Append('\n');
                }
                output.Append(Name).Append("_sum");
                s.WriteLabels(output, null);
                output.Append(' ').Append(Number(Volatile.Read(ref s.Value))).Append('\n');
                output.Append(Name).Append("_count");
                s.WriteLabels(output, null);
                output.Append(' ').Append(Math.Max(cumulative, count)).Append('\n');
            }
        }
    }

    /// <summary>One label set of an instrument and its running value.</summary>
    private sealed class Series
    {
        private readonly string[] _keys;
        private readonly string[] _values;
        public double Value;
        public long Count;
        public readonly long[] Buckets;

        public Series(ReadOnlySpan<KeyValuePair<string, object?>> tags, int buckets)
        {
            _keys = new string[tags.Length];
            _values = new string[tags.Length];
            for (int i = 0; i < tags.Length; i++)
            {
                _keys[i] = tags[i].Key;
                _values[i] = Convert.ToString(tags[i].Value, CultureInfo.InvariantCulture) ?? "";
            }
            Buckets = new long[buckets];
        }

        /// <summary>The instruments pass their labels in one order; string values are compared as such.</summary>
        public bool Matches(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (tags.Length != _keys.Length)
            {
                return false;
            }
            for (int i = 0; i < tags.Length; i++)
            {
                if (!string.Equals(tags[i].Key, _keys[i], StringComparison.Ordinal))
                {
                    return false;
                }
                object? value = tags[i].Value;
                if (value is string s ? !string.Equals(s, _values[i], StringComparison.Ordinal)
                    : !string.Equals(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "", _values[i], StringComparison.Ordinal))
                {
                    return false;
                }
            }
            return true;
        }

        public void WriteLabels(StringBuilder output, string? le)
        {
            if (_keys.Length == 0 && le is null)
            {
                return;
            }
            output.Append('{');
            for (int i = 0; i < _keys.Length; i++)
            {
                if (i > 0)
                {
                    output.Append(',');
                }
                output.Append(_keys[i]).Append("=\"");
                foreach (char c in _values[i])
                {
                    _ = c switch
                    {
                        '\\' => output.Append("\\\\"),
                        '"' => output.Append("\\\""),
                        '\n' => output.Append("\\n"),
                        _ => output.Append(c),
                    };
                }
                output.Append('"');
            }
            if (le is not null)
            {
                output.Append(_keys.Length > 0 ? ",le=\"" : "le=\"").Append(le).Append('"');
            }
            output.Append('}');
        }
    }
}
