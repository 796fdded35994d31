/*
 * The shared catalog's Hive metastore service, listening on 127.0.0.1 only.
 *
 * Hive 2.3's own entry point (HiveMetaStore.main -> startMetaStore) binds every interface
 * (HiveAuthUtils.getServerSocket(null, port)) and has no setting for the address, so anyone who
 * can reach the machine could create and drop every tenant's tables. This starts the same service
 * the way startMetaStore does for the configuration sparkfleet writes (no SASL, no SSL, unframed
 * binary Thrift) and binds loopback. Left out, as that configuration has them off: metrics, the
 * compactor and ACID housekeeping threads, the replication change-manager cleaner, and the JVM
 * pause monitor (a log line about GC pauses).
 *
 * Run with Java 11+'s single-file source launch, with hive-site.xml and the Spark runtime's jars
 * on the class path:  java -cp CONF_DIR:SPARK_JARS/* LoopbackMetastore.java -p PORT
 */

import java.util.List;

import org.apache.hadoop.hive.common.LogUtils;
import org.apache.hadoop.hive.common.auth.HiveAuthUtils;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.conf.HiveConf.ConfVars;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.TServerSocketKeepAlive;
import org.apache.hadoop.hive.metastore.TSetIpAddressProcessor;
import org.apache.hadoop.hive.metastore.TUGIBasedProcessor;
import org.apache.hadoop.hive.thrift.TUGIContainingTransport;
import org.apache.thrift.TProcessor;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.server.TServer;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransportFactory;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

public class LoopbackMetastore {
    private static final String HOST = "127.0.0.1";
    private static final Logger LOG = LoggerFactory.getLogger(LoopbackMetastore.class);
    // Settings that would need the parts of startMetaStore this launcher leaves out.
    private static final List<ConfVars> UNSUPPORTED = List.of(
        ConfVars.METASTORE_USE_THRIFT_SASL, ConfVars.HIVE_METASTORE_USE_SSL,
        ConfVars.METASTORE_USE_THRIFT_FRAMED_TRANSPORT, ConfVars.METASTORE_USE_THRIFT_COMPACT_PROTOCOL);

    public static void main(String[] args) throws Throwable {
        if (args.length != 2 || !args[0].equals("-p")) {
            System.err.println("usage: LoopbackMetastore.java -p PORT");
            System.exit(2);
        }
        int port = Integer.parseInt(args[1]);

        // As HiveMetaStore.main: read hive-site.xml (and hivemetastore-site.xml) from the class path.
        HiveConf.setLoadMetastoreConfig(true);
        HiveConf conf = new HiveConf(HiveMetaStore.HMSHandler.class);
        if (System.getProperty("log4j.configurationFile") == null) {
            try {
                LogUtils.initHiveLog4j();
            } catch (LogUtils.LogInitializationException e) {
                LOG.warn(e.getMessage());
            }
        }
        for (ConfVars setting : UNSUPPORTED) {
            if (conf.getBoolVar(setting)) {
                throw new IllegalArgumentException(setting.varname + " is on; this launcher serves plain binary Thrift only");
            }
        }

        try {
            serve(conf, port);
        } catch (Throwable error) {
            LOG.error("Metastore Thrift Server threw an exception...", error);
            throw error;
        }
    }

    /** HiveMetaStore.startMetaStore's plain path, with the server socket on loopback. */
    private static void serve(HiveConf conf, int port) throws Throwable {
        long maxMessageSize = conf.getLongVar(ConfVars.METASTORESERVERMAXMESSAGESIZE);
        int minWorkerThreads = conf.getIntVar(ConfVars.METASTORESERVERMINTHREADS);
        int maxWorkerThreads = conf.getIntVar(ConfVars.METASTORESERVERMAXTHREADS);
        boolean tcpKeepAlive = conf.getBoolVar(ConfVars.METASTORE_TCP_KEEP_ALIVE);

        IHMSHandler handler = HiveMetaStore.newRetryingHMSHandler(
            new HiveMetaStore.HMSHandler("new db based metaserver", conf, false), conf);
        TTransportFactory transportFactory;
        TProcessor processor;
        if (conf.getBoolVar(ConfVars.METASTORE_EXECUTE_SET_UGI)) {
            // Clients send their user with set_ugi; calls then run as that user.
            transportFactory = new TUGIContainingTransport.Factory();
            processor = new TUGIBasedProcessor<>(handler);
            LOG.info("Starting DB backed MetaStore Server with SetUGI enabled");
        } else {
            transportFactory = new TTransportFactory();
            processor = new TSetIpAddressProcessor<>(handler);
            LOG.info("Starting DB backed MetaStore Server");
        }

        TServerSocket serverSocket = HiveAuthUtils.getServerSocket(HOST, port);
        if (tcpKeepAlive) {
            serverSocket = new TServerSocketKeepAlive(serverSocket);
        }
        TThreadPoolServer.Args serverArgs = new TThreadPoolServer.Args(serverSocket)
            .processor(processor)
            .transportFactory(transportFactory)
            .protocolFactory(new TBinaryProtocol.Factory())
            .inputProtocolFactory(new TBinaryProtocol.Factory(true, true, maxMessageSize, maxMessageSize))
            .minWorkerThreads(minWorkerThreads)
            .maxWorkerThreads(maxWorkerThreads);
        TServer server = new TThreadPoolServer(serverArgs);
        LOG.info("Started the new metaserver on {}:{} (min/max worker threads {}/{}, TCP keepalive {})",
                 HOST, port, minWorkerThreads, maxWorkerThreads, tcpKeepAlive);
        server.serve();
    }
}
