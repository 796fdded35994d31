"""What a cluster's start failure says: the exception its JVM died of, found in its log."""

from sparkfleet.fleet.provisioners.local import cause_in

_LOG = """26/12/02 09:43:57 INFO SparkContext: Running Spark version 4.3.0
26/12/02 09:43:58 WARN NativeCodeLoader: Unable to load native-hadoop library for your platform
java.lang.IllegalStateException: an earlier trace, already handled
\tat org.apache.spark.Something.run(Something.scala:1)
26/12/02 09:44:04 ERROR SparkConnectServer: Error starting Spark Connect server
java.net.BindException: Failed to bind to address /127.0.0.1:57223: Service 'SparkConnectService' failed after 0 retries
\tat org.apache.spark.util.Utils$.startServiceOnPort(Utils.scala:2301)
Caused by: io.grpc.netty.shaded.io.netty.channel.unix.Errors$NativeIoException: bind(..) failed: Address already in use
26/12/02 09:44:04 INFO SparkContext: Successfully stopped SparkContext
"""


def test_the_cause_is_the_last_stack_trace_that_began_not_a_log_line_or_a_frame():
    assert cause_in(_LOG) == (
        ": java.net.BindException: Failed to bind to address /127.0.0.1:57223: "
        "Service 'SparkConnectService' failed after 0 retries"
    )


def test_an_uncaught_exception_in_a_thread_is_a_cause():
    text = 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space\n\tat x.y(Z.java:1)\n'
    assert cause_in(text) == ': Exception in thread "main" java.lang.OutOfMemoryError: Java heap space'


def test_a_log_without_a_stack_trace_names_no_cause():
    assert cause_in("26/12/02 INFO SparkContext: Error: not a trace, a message\nERROR foo\n") == ""
