Console.WriteLine("karpetrack");
