# The moonrabbit worker image, built from Debian 12 packages only.
#
# Both stages install through tools/install-deps.sh, the script the native
# set-up runs, so the packages in the image and on a developer's machine
# come from one list and cannot drift: "build" for the compiler and -dev
# packages, "runtime" for the shared libraries the binary loads. The build
# is the README's own cmake pair.
#
#   docker build -t moonrabbit .      (or: docker-compose -f
#                                      docker-compose.worker.yml build)

FROM debian:12 AS build
WORKDIR /src
# The script alone first, so editing a source file does not invalidate the
# package layer.
COPY tools/install-deps.sh tools/install-deps.sh
RUN tools/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt ./
COPY core core
COPY tools tools
RUN cmake -S . -B build -DBUILD_TESTING=OFF \
 && cmake --build build --target moonrabbit -j"$(nproc)"


FROM debian:12
COPY tools/install-deps.sh /tmp/install-deps.sh
RUN /tmp/install-deps.sh runtime \
 && rm -rf /var/lib/apt/lists/* /tmp/install-deps.sh \
 && useradd --system --no-create-home --home-dir /app \
      --shell /usr/sbin/nologin moonrabbit
WORKDIR /app
COPY --from=build /src/build/moonrabbit /usr/local/bin/moonrabbit
# Defaults for a plain `docker run`; the compose file mounts the working
# tree's copies over these, so an edited policy needs no rebuild. The
# relative defaults POLICY_DIR=policies and JOB_SCRIPT=scripts/... resolve
# here, in /app.
COPY policies policies
COPY scripts scripts
# Inside a container loopback would hide the endpoint from Prometheus and
# from a published port; the health check alone would still reach it.
ENV METRICS_ADDR=0.0.0.0:9464
EXPOSE 9464
USER moonrabbit
ENTRYPOINT ["/usr/local/bin/moonrabbit"]
