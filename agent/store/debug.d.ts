// The part of the `debug` package (a dependency of the proxy agents) that store/proxy.ts uses.
declare module 'debug' {
  interface Debug {
    /** switches every namespace off and returns the ones that were on */
    disable(): string;
    enable(namespaces: string): void;
  }
  const debug: Debug;
  export default debug;
}
