// What each Spark Connect operation cost, written by the cluster itself as its jobs end.
//
// Registered with spark.extraListeners; runs on Spark's listener bus, off every query's path.
// For each job of a Spark Connect operation (tagged SparkConnect_OperationTag_...) it sums the
// task metrics of the stages the job ran, and writes one JSON line when the job ends; when the
// operation itself finishes (or fails, or is cancelled) it writes an "end" line, after which no
// more jobs of it are expected. sparkfleet reads the lines in batches (fleet/query_costs.py).
//
// Lines go to numbered segments, <dir>/costs-NNNNNN.jsonl, a new one after 4 MiB: a reader deletes
// a segment once it has read it and a later one exists.
package sparkfleet;

import java.io.BufferedWriter;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;

import org.apache.spark.SparkConf;
import org.apache.spark.executor.TaskMetrics;
import org.apache.spark.scheduler.JobFailed;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerEvent;
import org.apache.spark.scheduler.SparkListenerJobEnd;
import org.apache.spark.scheduler.SparkListenerJobStart;
import org.apache.spark.scheduler.SparkListenerStageCompleted;
import org.apache.spark.scheduler.StageInfo;

public class QueryCostListener extends SparkListener {
    private static final String TAG_PREFIX = "SparkConnect_OperationTag_";
    private static final long SEGMENT_BYTES = 4L * 1024 * 1024;

    private static final class JobCost {
        final String tag;
        final long start;
        long stages, tasks, runMs, cpuNs, peak, spill, shuffle, inBytes, inRecords;

        JobCost(String tag, long start) {
            this.tag = tag;
            this.start = start;
        }
    }

    private final File dir;
    private final Map<Integer, JobCost> jobs = new HashMap<>();
    private final Map<Integer, Integer> stageJob = new HashMap<>();
    private Writer out;
    private long written;
    private int segment;

    public QueryCostListener(SparkConf conf) {
        dir = new File(conf.get("spark.sparkfleet.costs.dir"));
        dir.mkdirs();
    }

    @Override
    public void onJobStart(SparkListenerJobStart event) {
        String tag = operationTag(event.properties());
        if (tag == null) {
            return;
        }
        jobs.put(event.jobId(), new JobCost(tag, event.time()));
        scala.collection.Iterator<Object> stages = event.stageIds().iterator();
        while (stages.hasNext()) {
            stageJob.putIfAbsent((Integer) stages.next(), event.jobId());
        }
    }

    @Override
    public void onStageCompleted(SparkListenerStageCompleted event) {
        StageInfo info = event.stageInfo();
        Integer jobId = stageJob.get(info.stageId());
        JobCost job = jobId == null ? null : jobs.get(jobId);
        TaskMetrics m = info.taskMetrics();
        if (job == null || m == null) {
            return;
        }
        job.stages += 1;
        job.tasks += info.numTasks();
        job.runMs += m.executorRunTime();
        job.cpuNs += m.executorCpuTime();
        job.peak = Math.max(job.peak, m.peakExecutionMemory());
        job.spill += m.memoryBytesSpilled() + m.diskBytesSpilled();
        job.shuffle += m.shuffleReadMetrics().totalBytesRead() + m.shuffleWriteMetrics().bytesWritten();
        job.inBytes += m.inputMetrics().bytesRead();
        job.inRecords += m.inputMetrics().recordsRead();
    }

    @Override
    public void onJobEnd(SparkListenerJobEnd event) {
        JobCost job = jobs.remove(event.jobId());
        stageJob.values().removeIf(id -> id == event.jobId());
        if (job == null) {
            return;
        }
        write("{\"tag\":" + quote(job.tag) + ",\"job\":" + event.jobId()
                + ",\"failed\":" + (event.jobResult() instanceof JobFailed)
                + ",\"start\":" + job.start + ",\"end\":" + event.time()
                + ",\"stages\":" + job.stages + ",\"tasks\":" + job.tasks
                + ",\"run_ms\":" + job.runMs + ",\"cpu_ms\":" + job.cpuNs / 1_000_000
                + ",\"peak\":" + job.peak + ",\"spill\":" + job.spill + ",\"shuffle\":" + job.shuffle
                + ",\"input_bytes\":" + job.inBytes + ",\"input_records\":" + job.inRecords + "}");
    }

    // Spark Connect posts SparkListenerConnectOperation{Finished,Failed,Canceled} when an operation
    // ends; its jobs have ended before (the bus delivers events in order).
    @Override
    public void onOtherEvent(SparkListenerEvent event) {
        String name = event.getClass().getSimpleName();
        if (!name.startsWith("SparkListenerConnectOperation")
                || !(name.endsWith("Finished") || name.endsWith("Failed") || name.endsWith("Canceled"))) {
            return;
        }
        try {
            Object tag = event.getClass().getMethod("jobTag").invoke(event);
            write("{\"tag\":" + quote(String.valueOf(tag)) + ",\"end\":true}");
        } catch (ReflectiveOperationException e) {
            // another Spark's event shape: the reader settles such operations by time instead
        }
    }

    private static String operationTag(Properties properties) {
        String tags = properties == null ? null : properties.getProperty("spark.job.tags");
        if (tags == null) {
            return null;
        }
        for (String tag : tags.split(",")) {
            if (tag.startsWith(TAG_PREFIX)) {
                return tag;
            }
        }
        return null;
    }

    private void write(String line) {
        try {
            if (out == null || written >= SEGMENT_BYTES) {
                if (out != null) {
                    out.close();
                }
                segment += 1;
                File file = new File(dir, String.format("costs-%06d.jsonl", segment));
                out = new BufferedWriter(new OutputStreamWriter(new FileOutputStream(file, true), StandardCharsets.UTF_8));
                written = 0;
            }
            out.write(line);
            out.write('\n');
            out.flush();
            written += line.length() + 1;
        } catch (IOException e) {
            // the history is an optimisation: a full disk must not hurt the cluster
        }
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
