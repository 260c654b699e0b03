# syntax=docker/dockerfile:1
# The shipped image: the NativeAOT executable `make publish` builds, on a minimal base. No .NET runtime
# in the image: the binary carries what it uses (about 40 MB); the base gives glibc, OpenSSL (TLS to the
# Kubernetes and Spot APIs) and CA certificates, and nothing else (no shell, no package manager).

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
# The native toolchain the AOT compiler links with; make runs the same publish step as `make publish`.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends clang zlib1g-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Restore on its own layer: it only reruns when the project file changes, not on every source edit.
COPY Karpetrack.csproj ./
RUN dotnet restore Karpetrack.csproj -r linux-x64 -p:PublishAot=true
COPY . ./
RUN make publish

# runtime-deps chiseled: glibc, libstdc++, OpenSSL and CA certificates only; it has no shell.
FROM mcr.microsoft.com/dotnet/runtime-deps:10.0-noble-chiseled
WORKDIR /app
COPY --from=build /src/.tmp/publish/karpetrack /app/karpetrack
# The chart runs as 65532 with a read-only root; the same numeric user here means `docker run` behaves alike.
# Kestrel listens where --metrics-addr/--grpc-addr say; the base image's ASPNETCORE_HTTP_PORTS=8080 would only
# produce an "overriding address" warning.
ENV ASPNETCORE_HTTP_PORTS=
USER 65532:65532
EXPOSE 9101 9102
ENTRYPOINT ["/app/karpetrack"]
