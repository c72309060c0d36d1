# Runnel's image: the two static binaries on an empty base (no registry is needed to build it:
# `make docker` compiles them with CGO_ENABLED=0 into bin/docker/ first).
#
#   make docker
#   docker run -d --name runnel -p 9420:9420 -v runnel-data:/data runnel:dev
#   docker exec runnel /runnel topic list
FROM scratch
COPY bin/docker/runneld bin/docker/runnel /
# gRPC, HTTP (/healthz, /metrics) and, with clustering, Raft: one port. 9421: Serf (TCP and UDP).
EXPOSE 9420 9421 9421/udp
VOLUME /data
ENV RUNNEL_DATA_DIR=/data RUNNEL_ADDR=0.0.0.0:9420 RUNNEL_LOG_FORMAT=json
ENTRYPOINT ["/runneld"]
