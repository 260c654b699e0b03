# syntax=docker/dockerfile:1
# Framework-dependent publish on the aspnet runtime image, not self-contained on runtime-deps:
# karpetrack is an ASP.NET Core app (Kestrel), so the shared framework is needed either way. Carried
# by the base image it is one layer shared with other .NET images and patched by rebuilding on a new
# base, and the app layer stays a few MB; a self-contained publish would ship that framework in
# every app layer and need trimming analysis for YamlDotNet's and the AWS SDK's reflection.

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# Restore on its own layer: it only reruns when the project file changes, not on every source edit.
COPY Karpetrack.csproj ./
RUN dotnet restore Karpetrack.csproj
COPY . ./
RUN dotnet publish Karpetrack.csproj -c Release -o /app --no-restore -p:UseAppHost=false

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /app ./
# Kestrel listens where --metrics-addr/--grpc-addr say; the base image's default port 8080 would only
# produce an "overriding address" warning.
ENV ASPNETCORE_HTTP_PORTS= \
    DOTNET_NOLOGO=1
# The chart runs as 65532 with a read-only root; the same numeric user here means `docker run` behaves alike.
USER 65532:65532
EXPOSE 9101 9102
ENTRYPOINT ["dotnet", "/app/karpetrack.dll"]
